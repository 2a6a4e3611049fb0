"""The built-in synthetic multi-site serial-CT cohort (``fedresponse synth``)."""
