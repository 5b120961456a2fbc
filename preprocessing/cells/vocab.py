"""The gene vocabulary written as ``vocab.json``; defined in :mod:`wensu.cell_vocab` (shared
with the cell datasets, the cell encoder and the probes) and re-exported here."""

from wensu.cell_vocab import (
    NUM_SPECIAL,
    SPECIAL_TOKENS,
    VOCAB_FORMAT,
    VOCAB_NAME,
    GeneVocab,
    VocabError,
)

__all__ = ["NUM_SPECIAL", "SPECIAL_TOKENS", "VOCAB_FORMAT", "VOCAB_NAME", "GeneVocab", "VocabError"]
