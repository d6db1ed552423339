"""Training priorflow's own small diffusion priors."""
