"""priorflow: training-free restoration of image and volume datasets with pretrained diffusion priors."""

__version__ = "0.1.0"
