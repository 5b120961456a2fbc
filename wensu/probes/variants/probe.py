"""Zero-shot variant-effect scores from a masked language model (ESM-1v style).

Three scores for a mutant of a wild-type sequence, higher = predicted fitter:

* ``masked_marginal`` (ESM-1v, Meier et al. 2021): mask one mutated position of the *wild type*,
  score ``log p(mut) - log p(wt)`` there. A multi-substitution ``A42G:L60P`` is the **sum of its
  single-position scores, each position masked on its own** (the others stay wild type), so it is
  exactly the sum of the single mutants' scores. One masked forward pass per distinct position
  serves all 19 substitutions there; positions are batched into passes of ``batch_tokens`` tokens.
* ``wt_marginal``: the same log-odds read from unmasked forward passes of the wild type (one pass
  for a sequence within the context; for longer ones see below).
* ``pll``: pseudo-log-likelihood difference ``PLL(mutant) - PLL(wild type)`` with
  ``PLL(s) = sum_i log p(s_i | s without i)``. Expensive: every residue of every mutant sequence
  is masked once, i.e. ``(n_mutants + 1) * L`` masked positions (about 1.4 M passes' worth of rows
  for 5,000 mutants of a 286-residue protein); use it on small sets.

Sequences longer than the trained context ``window`` (default 1022 residues, ESM-2's) take one
of two paths:

* centred windows (``long_context=False``, the default for dense models): each position is
  scored in the ``window`` residues centred on it (shifted to stay inside the sequence), wrapped
  in ``<cls> ... <eos>`` as ESM-1v and ProteinGym do. Unmasked passes (``wt_marginal``) tile the
  sequence every ``window // 2`` residues and read each position from the tile whose centre is
  nearest, so every position keeps at least ``window // 4`` residues of context on each side.
* the whole sequence in one pass (``long_context=True``, the default for models trained with a
  windowed attention pattern): the model's own local attention covers any length, run with the
  ``chunked`` backend (same pattern, memory linear in L).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.embed.compute import chunked_twin
from wensu.model import Encoder
from wensu.model.moe import unlimited_expert_capacity
from wensu.probes.variants.data import (
    AMINO_ACIDS,
    Mutant,
    check_mutant,
    mutated_sequence,
    parse_mutant,
)
from wensu.progress import progress_bar

METHODS = ("masked_marginal", "wt_marginal", "pll")
DEFAULT_CONTEXT = 1022  # residues (ESM-1b/ESM-1v/ESM-2 context without <cls>/<eos>)
DEFAULT_BATCH_TOKENS = 16384


def centred_window(position: int, length: int, window: int) -> tuple[int, int]:
    """``[start, end)`` of ``window`` residues centred on 0-based ``position``, kept in bounds."""
    if length <= window:
        return 0, length
    start = min(max(position - window // 2, 0), length - window)
    return start, start + window


def tile_starts(length: int, window: int) -> list[int]:
    """Starts of windows every ``window // 2`` residues, the last ending at the sequence end."""
    if length <= window:
        return [0]
    stride = max(1, window // 2)
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


@contextlib.contextmanager
def _batch_independent(model: Encoder) -> Iterator[None]:
    """Eval mode, and no MoE capacity limit (a row's output must not depend on its batch-mates)."""
    was_training = model.training
    model.eval()
    try:
        with unlimited_expert_capacity(model):
            yield
    finally:
        model.train(was_training)


class ResidueLogProbs:
    """Per-position log-probabilities of a sequence under an encoder (masked or unmasked).

    Handles long sequences (centred windows or the long-context backend, see the module
    docstring) and batches rows of equal length into forward passes of ``batch_tokens`` tokens.
    """

    def __init__(
        self,
        model: Encoder,
        alphabet: Alphabet,
        *,
        window: int | None = None,
        long_context: bool | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        device: str | torch.device | None = None,
        show_progress: bool = False,
    ):
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of residues, got {window}")
        self.alphabet = alphabet
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device)
        self.window = window or DEFAULT_CONTEXT
        self.model_window = model.cfg.attention.window
        self.long_context = self.model_window is not None if long_context is None else long_context
        self.batch_tokens = batch_tokens
        self.show_progress = show_progress
        self._chunked: Encoder | None = None

    def whole_sequence(self, length: int) -> bool:
        """Whether a sequence of ``length`` residues is scored in one piece (no cropping)."""
        return self.long_context or length <= self.window

    def _encoder(self, length: int) -> Encoder:
        backend = self.model.cfg.attention.backend
        needs_chunked = (backend == "flex" and self.device.type == "cpu") or (
            length > self.window and self.model_window is not None and backend == "dense"
        )
        if not needs_chunked:
            return self.model
        if self._chunked is None:
            # Same weights and attention pattern; CPU flex compiles per length and dense
            # builds an L x L mask, chunked does neither.
            self._chunked = chunked_twin(self.model)
        return self._chunked

    def _run(
        self,
        encoded: np.ndarray,
        span: int,
        starts: np.ndarray,
        mask_at: np.ndarray,
        read_row: np.ndarray,
        read_col: np.ndarray,
    ) -> np.ndarray:
        """Rows = ``<cls> encoded[start:start+span] <eos>`` (token ``mask_at`` masked unless -1);
        return the [N, vocab] log-softmax at token (``read_row``, ``read_col``)."""
        width = span + 2
        per_pass = max(1, self.batch_tokens // width)
        encoder = self._encoder(span)
        out = np.empty((len(read_row), len(self.alphabet)), dtype=np.float32)
        offsets = np.arange(span)
        passes = range(0, len(starts), per_pass)
        with _batch_independent(encoder), torch.inference_mode():
            for first in progress_bar(passes, desc="variant scoring", enabled=self.show_progress):
                rows = np.arange(first, min(first + per_pass, len(starts)))
                tokens = np.empty((len(rows), width), dtype=np.int64)
                tokens[:, 0] = self.alphabet.cls_idx
                tokens[:, -1] = self.alphabet.eos_idx
                tokens[:, 1:-1] = encoded[starts[rows, None] + offsets]
                masked = mask_at[rows] >= 0
                tokens[masked, mask_at[rows][masked]] = self.alphabet.mask_idx
                logits = encoder(torch.from_numpy(tokens).to(self.device))["logits"]
                wanted = np.flatnonzero((read_row >= rows[0]) & (read_row <= rows[-1]))
                at_row = torch.from_numpy(read_row[wanted] - rows[0]).to(self.device)
                at_col = torch.from_numpy(read_col[wanted]).to(self.device)
                picked = logits[at_row, at_col].float()
                out[wanted] = torch.log_softmax(picked, dim=-1).cpu().numpy()
        return out

    def _encode(self, sequence: str) -> np.ndarray:
        return self.alphabet.encode(sequence, add_special=False)

    def masked(self, sequence: str, positions: Sequence[int]) -> np.ndarray:
        """[P, vocab] log p(token at i | sequence with only i masked), 0-based ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        encoded, length = self._encode(sequence), len(sequence)
        if self.whole_sequence(length):
            span, starts = length, np.zeros(len(positions), dtype=np.int64)
        else:
            span = self.window
            starts = np.array([centred_window(p, length, span)[0] for p in positions], np.int64)
        columns = positions - starts + 1
        rows = np.arange(len(positions))
        return self._run(encoded, span, starts, columns, rows, columns)

    def unmasked(self, sequence: str, positions: Sequence[int]) -> np.ndarray:
        """[P, vocab] log p(token at i | the whole unmasked sequence), 0-based ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        encoded, length = self._encode(sequence), len(sequence)
        if self.whole_sequence(length):
            span, tiles = length, np.zeros(1, dtype=np.int64)
        else:
            span, tiles = self.window, np.asarray(tile_starts(length, self.window), np.int64)
        centres = tiles + (span - 1) / 2
        nearest = np.abs(positions[:, None] - centres[None, :]).argmin(axis=1)
        used, read_row = np.unique(nearest, return_inverse=True)
        starts = tiles[used]
        columns = positions - starts[read_row] + 1
        no_mask = np.full(len(starts), -1, dtype=np.int64)
        return self._run(encoded, span, starts, no_mask, read_row, columns)

    def pseudo_log_likelihood(self, sequence: str) -> float:
        """sum_i log p(s_i | s with i masked): ``len(sequence)`` masked positions."""
        positions = np.arange(len(sequence))
        log_probs = self.masked(sequence, positions)
        return float(log_probs[positions, self._encode(sequence)].sum(dtype=np.float64))


def _parse_all(
    mutants: Sequence[str | Mutant], sequence: str, offset: int, source: str
) -> list[Mutant]:
    parsed = []
    for row, mutant in enumerate(mutants, start=1):
        where = f"{source} row {row}"
        value = parse_mutant(mutant, where=where) if isinstance(mutant, str) else tuple(mutant)
        check_mutant(value, sequence, offset, where=where)
        parsed.append(value)
    return parsed


def score_variants(
    model: Encoder,
    alphabet: Alphabet,
    sequence: str,
    mutants: Sequence[str | Mutant],
    *,
    method: str = "masked_marginal",
    offset: int = 1,
    window: int | None = None,
    long_context: bool | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: str | torch.device | None = None,
    source: str = "mutants",
    show_progress: bool = False,
) -> np.ndarray:
    """Zero-shot scores (float64, higher = predicted fitter) of ``mutants`` of ``sequence``.

    ``mutants`` are names like ``A42G`` / ``A42G:L60P`` (or parsed substitutions); a position
    ``p`` refers to ``sequence[p - offset]``. ``method`` is ``masked_marginal``, ``wt_marginal``
    or ``pll`` (see the module docstring). ``window`` is the trained context in residues
    (default 1022); ``long_context`` picks the path for longer sequences (None: whole sequence
    through the model's windowed attention when it has one, centred windows otherwise).
    ``device`` None keeps the model where it is; otherwise the model is moved there. Errors name
    ``source`` and the 1-based row of the offending mutant.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    sequence = sequence.upper()
    parsed = _parse_all(mutants, sequence, offset, source)
    scorer = ResidueLogProbs(
        model,
        alphabet,
        window=window,
        long_context=long_context,
        batch_tokens=batch_tokens,
        device=device,
        show_progress=show_progress,
    )
    if method == "pll":
        reference = scorer.pseudo_log_likelihood(sequence)
        return np.array(
            [
                scorer.pseudo_log_likelihood(mutated_sequence(sequence, m, offset)) - reference
                for m in parsed
            ],
            dtype=np.float64,
        )
    positions = sorted({s.position - offset for m in parsed for s in m})
    read = scorer.masked if method == "masked_marginal" else scorer.unmasked
    log_probs = read(sequence, positions).astype(np.float64)
    row_of = {p: i for i, p in enumerate(positions)}
    index = alphabet.index
    scores = np.zeros(len(parsed), dtype=np.float64)
    for k, mutant in enumerate(parsed):
        for s in mutant:
            row = log_probs[row_of[s.position - offset]]
            scores[k] += row[index[s.mutant]] - row[index[s.wild_type]]
    return scores


def score_landscape(
    model: Encoder,
    alphabet: Alphabet,
    sequence: str,
    positions: Sequence[int],
    *,
    method: str = "masked_marginal",
    offset: int = 1,
    **scorer_options,
) -> np.ndarray:
    """[P, 20] scores of every substitution (``AMINO_ACIDS`` order; 0 for the wild type) at
    ``positions`` (numbered as in mutant names). ``method``: masked_marginal or wt_marginal;
    ``scorer_options`` as in :func:`score_variants` (window, long_context, batch_tokens, ...).
    """
    if method not in ("masked_marginal", "wt_marginal"):
        raise ValueError(f"score_landscape needs masked_marginal or wt_marginal, got {method!r}")
    sequence = sequence.upper()
    index = np.asarray([p - offset for p in positions], dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= len(sequence)):
        raise ValueError(f"positions must lie in {offset}..{offset + len(sequence) - 1}")
    scorer = ResidueLogProbs(model, alphabet, **scorer_options)
    read = scorer.masked if method == "masked_marginal" else scorer.unmasked
    log_probs = read(sequence, index).astype(np.float64)
    residues = log_probs[:, [alphabet.index[a] for a in AMINO_ACIDS]]
    wild_type = log_probs[np.arange(len(index)), [alphabet.index[sequence[i]] for i in index]]
    return residues - wild_type[:, None]
