"""Secondary-structure probes on frozen per-residue features: a linear layer and a small
convolutional head, trained with early stopping on a validation split (torch, CPU).

Features are standardised with the training set's per-dimension mean and standard deviation, so
one learning rate suits embeddings of any scale (and one-hot baselines). Accuracy (Q3/Q8) and
per-class F1 are pooled over all scored residues of a test set, as NetSurfP/ProtTrans report.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

IGNORE = -100


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: the heads are small, and on a shared, busy CPU the intra-op
    thread pool spends more time waiting for a core than it saves (measured: several-fold)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ProbeData:
    """Per-sequence features [L, d] and labels [L] (IGNORE where not scored)."""

    features: list[np.ndarray]
    labels: list[np.ndarray]

    def __post_init__(self) -> None:
        for i, (x, y) in enumerate(zip(self.features, self.labels, strict=True)):
            if len(x) != len(y):
                raise ValueError(f"sequence {i}: {len(x)} feature rows vs {len(y)} labels")


@dataclass
class ProbeSettings:
    """Optimisation settings shared by both heads."""

    max_epochs: int = 30
    patience: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_residues: int = 8192
    conv_channels: int = 32
    conv_kernel: int = 7
    dropout: float = 0.25
    seed: int = 0


class ConvHead(nn.Module):
    """Conv1d(d -> c, k) -> ReLU -> dropout -> Conv1d(c -> classes, k), 'same' padding."""

    def __init__(self, dim: int, num_classes: int, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, channels, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, num_classes, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = rearrange(x, "b l d -> b d l")
        h = self.conv2(self.dropout(F.relu(self.conv1(h))))
        return rearrange(h, "b c l -> b l c")


def make_probe(kind: str, dim: int, num_classes: int, settings: ProbeSettings) -> nn.Module:
    """``linear`` (per residue) or ``conv`` (local context, ProtTrans-style CNN head)."""
    if kind == "linear":
        return nn.Linear(dim, num_classes)
    if kind == "conv":
        return ConvHead(
            dim, num_classes, settings.conv_channels, settings.conv_kernel, settings.dropout
        )
    raise ValueError(f"unknown probe kind {kind!r}; choose 'linear' or 'conv'")


@dataclass
class TrainedProbe:
    """A fitted head with its input standardisation and training history."""

    kind: str
    module: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def _batches(
    lengths: Sequence[int], budget: int, rng: np.random.Generator | None
) -> list[list[int]]:
    """Length-sorted batches of at most ``budget`` padded residues; shuffled when rng is given."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        width_next = max(width, lengths[i])
        if current and width_next * (len(current) + 1) > budget:
            batches.append(current)
            current, width_next = [], lengths[i]
        current.append(i)
        width = width_next
    if current:
        batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _collate(data: ProbeData, index: list[int], mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(data.labels[i]) for i in index)
    dim = data.features[index[0]].shape[1]
    x = torch.zeros(len(index), width, dim)
    y = torch.full((len(index), width), IGNORE, dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.labels[i])
        x[row, :n] = (torch.from_numpy(np.asarray(data.features[i], dtype=np.float32)) - mean) / std
        y[row, :n] = torch.from_numpy(data.labels[i])
    return x, y


def _standardisation(data: ProbeData) -> tuple[torch.Tensor, torch.Tensor]:
    total = sum(len(x) for x in data.features)
    sums = sum(np.asarray(x, dtype=np.float64).sum(0) for x in data.features)
    squares = sum((np.asarray(x, dtype=np.float64) ** 2).sum(0) for x in data.features)
    mean = sums / total
    std = np.sqrt(np.maximum(squares / total - mean**2, 0.0)) + 1e-6
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def predict(probe: TrainedProbe, data: ProbeData, batch_residues: int = 8192) -> list[np.ndarray]:
    """Predicted class per residue for each sequence."""
    probe.module.eval()
    out: list[np.ndarray | None] = [None] * len(data.labels)
    with torch.inference_mode(), single_thread():
        for index in _batches([len(y) for y in data.labels], batch_residues, None):
            x, _ = _collate(data, index, probe.mean, probe.std)
            pred = probe.module(x).argmax(-1).numpy()
            for row, i in enumerate(index):
                out[i] = pred[row, : len(data.labels[i])]
    return out  # type: ignore[return-value]


def accuracy(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Fraction of scored residues (label != IGNORE) predicted correctly: Q3 / Q8."""
    pred, true = _pooled(predictions, labels)
    return float((pred == true).mean()) if len(true) else float("nan")


def per_class_f1(
    predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: str
) -> dict[str, float]:
    """F1 of each class over scored residues (NaN for a class absent from both)."""
    pred, true = _pooled(predictions, labels)
    scores = {}
    for i, name in enumerate(classes):
        tp = int(((pred == i) & (true == i)).sum())
        denominator = int((pred == i).sum() + (true == i).sum())
        scores[name] = 2 * tp / denominator if denominator else float("nan")
    return scores


def _pooled(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    pred = np.concatenate([np.asarray(p) for p in predictions]) if predictions else np.array([])
    true = np.concatenate([np.asarray(y) for y in labels]) if labels else np.array([])
    keep = true != IGNORE
    return pred[keep], true[keep]


def _run_epoch(
    probe: TrainedProbe,
    optimiser: torch.optim.Optimizer,
    train: ProbeData,
    settings: ProbeSettings,
    rng: np.random.Generator,
) -> float:
    """One pass over the training data; mean loss."""
    probe.module.train()
    losses = []
    for index in _batches([len(y) for y in train.labels], settings.batch_residues, rng):
        x, y = _collate(train, index, probe.mean, probe.std)
        if (y != IGNORE).sum() == 0:
            continue
        logits = rearrange(probe.module(x), "b l c -> (b l) c")
        loss = F.cross_entropy(logits, y.flatten(), ignore_index=IGNORE)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def train_probe(
    kind: str, train: ProbeData, valid: ProbeData, num_classes: int, settings: ProbeSettings
) -> TrainedProbe:
    """Fit a head with AdamW; keep the epoch with the best validation accuracy (early stopping)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    mean, std = _standardisation(train)
    module = make_probe(kind, train.features[0].shape[1], num_classes, settings)
    optimiser = torch.optim.AdamW(
        module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    probe = TrainedProbe(kind, module, mean, std, best_epoch=0)
    best_accuracy, best_state, stale = -1.0, copy.deepcopy(module.state_dict()), 0
    with single_thread():
        for epoch in range(1, settings.max_epochs + 1):
            loss = _run_epoch(probe, optimiser, train, settings, rng)
            valid_accuracy = accuracy(predict(probe, valid, settings.batch_residues), valid.labels)
            probe.history.append(
                {"epoch": epoch, "train_loss": loss, "valid_accuracy": valid_accuracy}
            )
            if valid_accuracy > best_accuracy:
                best_accuracy, stale = valid_accuracy, 0
                best_state = copy.deepcopy(module.state_dict())
                probe.best_epoch = epoch
            else:
                stale += 1
                if stale >= settings.patience:
                    break
    module.load_state_dict(best_state)
    module.eval()
    return probe
