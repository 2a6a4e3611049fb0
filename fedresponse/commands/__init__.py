"""One module per ``fedresponse`` command; each exposes ``register(app)``."""
