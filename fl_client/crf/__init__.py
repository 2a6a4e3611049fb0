"""CRF edit checks from the data validation plan (configs/dvp.yaml) and protocol eligibility."""
