"""Robustness: embedding similarity and SS3 accuracy under sequence perturbations."""
