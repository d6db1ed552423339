"""Diffusion priors in pixel or latent space, their noise schedules, autoencoders and checkpoint formats."""
