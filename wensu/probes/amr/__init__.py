"""Antimicrobial resistance: mean embeddings -> logistic regression, cross-validation grouped by
family."""
