"""The forward models of y = A(x) + n: operators A (registry.py builds them by name), noise models, the deepinv
adapter, and the classical reconstructions a diffusion prior must beat."""
