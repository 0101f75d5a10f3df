"""Hand-written kernels for what XLA does slowly on some backend (see each module)."""
