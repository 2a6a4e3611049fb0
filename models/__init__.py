"""Networks: ST-GCN, decomposition-ensemble Transformer, fusion and heads (one network per file)."""
