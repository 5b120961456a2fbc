"""Interpretability: attention-head contact quality, logit lens, embedding maps of labelled
proteins."""
