"""Error types of the training app (kept free of heavy imports so the CLI can load them fast)."""

from __future__ import annotations


class TrainConfigError(ValueError):
    """A training option is unknown or impossible; the message names the key and the reason."""


class UsageError(ValueError):
    """Bad input found before training started (config, dataset, checkpoint, devices); the
    CLI prints it as one line ``error: <message>`` and exits with status 2."""
