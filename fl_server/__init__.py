"""The coordinating centre: Flower ServerApp, ciphertext aggregation, update validation, checkpoints."""
