"""Site ingest: PACS export → de-identified, quality-checked, validated site study store (docs/store.md)."""
