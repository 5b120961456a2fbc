"""The evaluation context for a cell-model checkpoint (``wensu-eval probe=cell_type``).

A cell checkpoint is not a protein checkpoint, so :func:`wensu.probes.cli.evaluate` hands over to
:func:`build_cell_context` when the checkpoint is a cell model or ``cell_type`` is asked
for; the encoders travel in :attr:`EvalContext.cells` (``EvalContext.encoders`` stays empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wensu.cell_vocab import NUM_SPECIAL
from wensu.checkpoint import load_cell_checkpoint
from wensu.data.shards import sha256_file
from wensu.model.cell_encoder import CellCheckpointError, CellEncoder
from wensu.model.encoder import count_parameters
from wensu.probes.common.context import MODEL, RANDOM_INIT, EvalContext, config_fields
from wensu.probes.common.errors import EvalConfigError
from wensu.probes.common.settings import resolve_data_dir, resolve_device, set_cpu_threads

CELL_PROBES = ("cell_type",)
DEFAULT_TARGET_SUM = 1e4


@dataclass
class CellModels:
    """The frozen checkpoint encoder and its random-init twin, with what tokenisation needs."""

    encoders: dict[str, CellEncoder]  # {"model": ..., "random-init": ...}
    vocab: list[str]
    info: dict[str, Any]
    max_genes: int
    num_bins: int  # preprocessing bins (the model's num_bins - 1; bin 0 = not expressed)
    target_sum: float
    device: str = "cpu"
    max_tokens: int = 8192
    vocab_ids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vocab_ids = {g: i + NUM_SPECIAL for i, g in enumerate(self.vocab)}


def resolve_cell_data_dir(value: str | None, fetch: bool = True) -> Path:
    """The data directory holding the built-in PBMC set (``singlecell/``): ``data_dir=`` →
    $WENSU_DATA → the per-user cache, fetched on first use when allowed."""
    return resolve_data_dir(value, "pbmc", fetch=fetch).root


def build_cell_context(
    cfg: Any, output: Path, selected: Sequence[str]
) -> tuple[EvalContext, dict[str, Any]]:
    """Load the cell checkpoint and its random-init twin; refuse protein probes."""
    protein = [p for p in selected if p not in CELL_PROBES]
    if protein:
        raise EvalConfigError(
            f"probe {protein} need a protein checkpoint but {cfg.checkpoint} is a cell model "
            f"(or cell_type was asked for too): run cell probes ({list(CELL_PROBES)}) and "
            "protein probes separately"
        )
    path = Path(str(cfg.checkpoint))
    try:
        encoder, vocab, info = load_cell_checkpoint(path)
    except CellCheckpointError as error:
        raise EvalConfigError(f"probe=cell_type needs a cell-model checkpoint: {error}") from None
    device = resolve_device(str(cfg.device))
    threads = set_cpu_threads(cfg.cpu_threads)
    torch.manual_seed(int(cfg.seed))
    twin = CellEncoder(encoder.cfg).eval()
    binning = dict(info.get("dataset", {}).get("binning") or {})
    models = CellModels(
        encoders={MODEL: encoder, RANDOM_INIT: twin},
        vocab=vocab,
        info=info,
        max_genes=int(encoder.cfg.max_genes),
        num_bins=int(binning.get("num_bins", encoder.cfg.num_bins - 1)),
        target_sum=float(binning.get("target_sum", DEFAULT_TARGET_SUM)),
        device=device,
        max_tokens=int(cfg.max_tokens),
    )
    c = encoder.cfg
    checkpoint = {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "config": c.to_dict(),
        "summary": (
            f"cell encoder: {c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads, "
            f"{len(vocab):,} genes, {c.num_bins} bins, max_genes {c.max_genes}, "
            f"{count_parameters(encoder):,} parameters, step {info.get('global_step')}"
        ),
    }
    ctx = EvalContext(
        encoders=[],
        data_dir=resolve_cell_data_dir(cfg.data_dir, fetch=bool(cfg.get("fetch", True))),
        output_dir=output,
        checkpoint=checkpoint,
        cells=models,
        **config_fields(cfg),
    )
    return ctx, {"device": device, "cpu_threads": threads, "max_genes": models.max_genes}
