"""Everything that runs inside a hospital: ingest, CRF edit checks, the site store, local training, ClientApp."""
