"""dermdl: reproducible deep-learning pipelines for dermatology images."""

__version__ = "0.1.0"
