"""Reproducibility benchmark suite for adversarial defenses of text classifiers."""
__version__ = "0.1.0"
