"""A deterministic UniParc-like FASTA generator for the preprocessing scale benchmark.

Records look like UniParc's FASTA release: ``>UPI<10 hex digits> status=active`` headers and
sequences wrapped at 60 residues; lengths are log-normal with median 290 residues (sigma 0.6,
clipped to [20, 35,000]); residues follow the UniProtKB amino-acid composition; 10% of the
records are exact copies of an earlier record's sequence under a new id. The same ``records``
and ``seed`` always give the same bytes; text is built with numpy a batch at a time, so
memory does not grow with the size.

    python experiments/benchmarks/uniparc_like.py 2000000 /tmp/uniparc_2M.fasta
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
# UniProtKB/Swiss-Prot composition (release statistics), in the order of AMINO; renormalised.
FREQUENCIES = np.array([8.25, 1.38, 5.45, 6.75, 3.86, 7.07, 2.27, 5.96, 5.84, 9.66, 2.42, 4.06,
                        4.70, 3.93, 5.53, 6.56, 5.34, 6.87, 1.08, 2.92])  # fmt: skip
MEDIAN_LENGTH, SIGMA, MIN_LENGTH, MAX_LENGTH = 290, 0.6, 20, 35_000
DUPLICATE_FRACTION = 0.10
WIDTH = 60
BATCH = 20_000
HEADER = b">UPI%010X status=active\n"
HEADER_SIZE = len(HEADER % 0)


def _batch(rng: np.random.Generator, first: int, count: int) -> bytes:
    lengths = np.exp(rng.normal(np.log(MEDIAN_LENGTH), SIGMA, count)).astype(np.int64)
    lengths = np.clip(lengths, MIN_LENGTH, MAX_LENGTH)
    residues = AMINO[rng.choice(AMINO.size, int(lengths.sum()), p=FREQUENCIES / FREQUENCIES.sum())]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Exact duplicates: a record takes the sequence of an earlier record of the batch.
    copies = np.flatnonzero(rng.random(count) < DUPLICATE_FRACTION)
    copies = copies[copies > 0]
    sources = (rng.random(copies.size) * copies).astype(np.int64)
    order = np.arange(count)
    for copy, source in zip(copies.tolist(), sources.tolist(), strict=True):
        order[copy] = order[source]  # chains resolve to the first record of the chain
    lengths, starts = lengths[order], starts[order]
    # Layout of the text: header, then lines of WIDTH residues each ended by "\n".
    lines = -(-lengths // WIDTH)
    sizes = HEADER_SIZE + lengths + lines
    text_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    text = np.full(int(sizes.sum()), ord("\n"), dtype=np.uint8)
    headers = b"".join(HEADER % (first + i) for i in range(count))
    header_at = (text_starts[:, None] + np.arange(HEADER_SIZE)).ravel()
    text[header_at] = np.frombuffer(headers, dtype=np.uint8)
    record = np.repeat(np.arange(count), lengths)
    within = np.arange(record.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = starts[record] + within
    target = text_starts[record] + HEADER_SIZE + within + within // WIDTH
    text[target] = residues[source]
    return text.tobytes()


def generate(path: Path, records: int, seed: int = 0) -> int:
    """Write ``records`` records to ``path``; returns the number of bytes written."""
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as handle:
        for first in range(0, records, BATCH):
            data = _batch(rng, first, min(BATCH, records - first))
            handle.write(data)
            written += len(data)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = generate(args.output, args.records, args.seed)
    print(f"{args.output}: {args.records:,} records, {size / 1e6:,.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
