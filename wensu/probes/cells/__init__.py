"""Cell-type probe for cell-model checkpoints: its evaluation context, tokenisation and embedding,
and the logistic-regression baselines on highly variable genes / PCA."""
