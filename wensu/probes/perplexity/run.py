"""The held-out perplexity probe on SCOP/ASTRAL domains (see
:mod:`wensu.probes.perplexity.probe`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from wensu.data.fasta import read_fasta
from wensu.probes.common.context import EvalContext, ProbeResult, stable_subset
from wensu.probes.perplexity.probe import (
    mask_sequences,
    masked_nll,
    perplexity,
    unigram_log_probs,
    unigram_nll,
)
from wensu.resources import default_fasta

SCOP_FASTA = "sequences/scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz"


def _read(path: Path) -> tuple[list[tuple[str, str]], dict[str, int]]:
    rejected: list = []
    records = [
        (r.id, r.sequence.decode("ascii"))
        for r in read_fasta(path, errors="skip", rejected=rejected)
    ]
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return records, reasons


def run_perplexity(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Masked perplexity of the model and random-init twin vs. unigram and uniform baselines."""
    result = ProbeResult("perplexity")
    path = ctx.data_dir / SCOP_FASTA
    corpus = Path(cfg["unigram_corpus"]) if cfg["unigram_corpus"] else default_fasta()
    result.inputs += [path, corpus]
    records, rejected = _read(path)
    records = stable_subset(records, cfg["max_sequences"], key=lambda r: r[0])
    sequences = [s for _, s in records]
    alphabet = ctx.encoders[0].alphabet
    masked = mask_sequences(
        sequences, alphabet, mask_prob=cfg["mask_prob"], seed=ctx.seed, max_length=cfg["max_length"]
    )
    values: dict[str, float] = {}
    for features in ctx.encoders:
        total, count = masked_nll(
            features.encoder,
            alphabet,
            masked,
            max_tokens=cfg["max_tokens"],
            device=str(features.device),
            desc=f"perplexity [{features.name}]",
            show_progress=ctx.show_progress,
        )
        values[features.name] = perplexity(total, count)
    corpus_records, corpus_rejected = _read(corpus)
    values["unigram (corpus)"] = perplexity(
        *unigram_nll(unigram_log_probs(s for _, s in corpus_records), alphabet, masked)
    )
    values["unigram (SCOP itself)"] = perplexity(
        *unigram_nll(unigram_log_probs(sequences), alphabet, masked)
    )
    values["uniform (20)"] = 20.0
    result.add_row("perplexity SCOP", "masked PPL", values)
    n_masked = sum(len(p) for p in masked.positions)
    result.details.update(
        perplexity=values,
        sequences=len(sequences),
        masked_positions=n_masked,
        rejected_records=rejected,
        corpus_rejected_records=corpus_rejected,
        unigram_corpus=str(corpus),
        cross_entropy_bits={k: math.log2(v) for k, v in values.items()},
    )
    result.notes.append(
        f"Perplexity: masked (not pseudo-) perplexity, {cfg['mask_prob']:.0%} of standard residues "
        f"per sequence masked at once with seed {ctx.seed}, {len(sequences)} SCOP domains, "
        f"{n_masked} masked positions. Unigram baselines: residue frequencies of {corpus.name} "
        "and of the SCOP set itself (an oracle unigram); uniform = 20."
    )
    return result
