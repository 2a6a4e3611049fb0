"""fedresponse: federated, privacy-preserving assessment of NSCLC response to immunochemotherapy."""

__version__ = "0.1.0"
