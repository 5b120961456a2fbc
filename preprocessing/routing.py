"""Send a part's kept records to their split writers, a part at a time.

The caller decides each record's split (from its own digest, or its cluster representative's,
through :class:`~preprocessing.split.SplitAssigner`); records keep their input order inside
each split, so the shards do not depend on how the input was cut into parts. Over-long
records are cut here by the ``long_policy`` (``drop`` was decided earlier).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from .config import SPLIT_NAMES
from .parse import Part
from .sharding import SplitWriter
from .split import cut_long


class Router:
    """Routes kept records to ``writers``; ``pieces`` counts the records written (after cuts).

    ``identity``: optional open FASTA files by split name that receive each routed sequence
    as ``>kept-index`` (the input of the test-vs-train identity report).
    """

    def __init__(
        self,
        writers: dict[str, SplitWriter],
        *,
        max_length: int | None,
        long_policy: str,
        identity: dict[str, BinaryIO] | None = None,
    ):
        self.writers = writers
        self.max_length, self.long_policy = max_length, long_policy
        self.identity = identity
        self.pieces = 0

    def route(
        self,
        part: Part,
        kept: np.ndarray,
        split_of: np.ndarray,
        clusters: list[str] | None,
        first_index: int,
    ) -> None:
        """Route ``part``'s records at positions ``kept`` (ascending) to the splits
        ``split_of`` (indices into ``SPLIT_NAMES``) with optional cluster ids (both one per
        kept record); ``first_index`` numbers the first one among all kept records of the run."""
        kept_rows = kept.tolist()
        all_sequences = part.sequence_list()
        ids, taxa = part.ids, part.taxa.tolist()
        for split_index, split in enumerate(SPLIT_NAMES):
            chosen = np.flatnonzero(split_of == split_index).tolist()
            if not chosen:
                continue
            rows = [kept_rows[n] for n in chosen]
            sequences = [all_sequences[i] for i in rows]
            if self.identity is not None and split in self.identity:
                handle = self.identity[split]
                for n, sequence in zip(chosen, sequences, strict=True):
                    handle.write(b">%d\n%s\n" % (first_index + n, sequence))
            names = [ids[i] for i in rows]
            split_taxa = [taxa[i] for i in rows]
            split_clusters = None if clusters is None else [clusters[n] for n in chosen]
            limit = self.max_length
            if limit is not None and max(map(len, sequences)) > limit:
                names, sequences, split_clusters, split_taxa = self._cut(
                    names, sequences, split_clusters, split_taxa
                )
            self.pieces += len(names)
            self.writers[split].add_many(names, sequences, split_clusters, split_taxa)

    def _cut(
        self,
        ids: list[str],
        sequences: list[bytes],
        clusters: list[str] | None,
        taxa: list[int],
    ) -> tuple[list[str], list[bytes], list[str] | None, list[int]]:
        """The same columns with every over-long record replaced by its pieces."""
        out_ids: list[str] = []
        out_sequences: list[bytes] = []
        out_clusters: list[str] | None = None if clusters is None else []
        out_taxa: list[int] = []
        for n, (record_id, sequence) in enumerate(zip(ids, sequences, strict=True)):
            pieces = cut_long(record_id, sequence, self.max_length, self.long_policy)
            for piece_id, piece in pieces:
                out_ids.append(piece_id)
                out_sequences.append(piece)
                out_taxa.append(taxa[n])
                if out_clusters is not None:
                    out_clusters.append(clusters[n])
        return out_ids, out_sequences, out_clusters, out_taxa
