"""What sites and server agree on: CKKS context and packing, DP accounting and ledger, the audit log."""
