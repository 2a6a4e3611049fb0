"""IBSI-compliant radiomics in PyTorch, sub-region graphs over time, and the Dynamic Heterogeneity Index."""
