"""Held-out masked perplexity on SCOP/ASTRAL domains, against a unigram baseline."""
