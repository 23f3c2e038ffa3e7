"""Ray and MLflow: the runtime that calls into the pure-PyTorch method code (never the reverse)."""
