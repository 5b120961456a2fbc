"""Zero-shot variant effects (ESM-1v masked-marginal, wild-type marginal, pseudo-likelihood).

``from wensu.probes.variants import score_variants`` is the public entry (see README).
"""

from wensu.probes.variants.probe import METHODS, score_landscape, score_variants

__all__ = ["METHODS", "score_landscape", "score_variants"]
