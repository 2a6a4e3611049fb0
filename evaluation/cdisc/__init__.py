"""CDISC submission package: SDTM DM/TU/TR/RS and ADaM ADSL/ADRS/ADTTE as SAS XPT v5, define.xml, reviewer's guide."""
