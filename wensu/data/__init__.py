"""Data path: FASTA reading, HDF5 shards, token-budget batching, MLM masking.

Exports resolve lazily (PEP 562) so that command-line tools that only read FASTA or write shards
do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMAT_VERSION": "shards",
    "MANIFEST_NAME": "shards",
    "SPLITS": "shards",
    "DatasetIntegrityError": "shards",
    "ManifestError": "shards",
    "read_manifest": "shards",
    "sha256_file": "shards",
    "shard_name": "shards",
    "write_manifest": "shards",
    "write_shard": "shards",
    "ShardedDataset": "dataset",
    "TokenBudgetBatchSampler": "sampler",
    "collate_records": "collate",
    "collate_tokens": "collate",
    "IGNORE_INDEX": "masking",
    "mask_tokens": "masking",
    "CellShardDataset": "cells",
    "collate_cells": "cells",
    "read_fasta": "fasta",
    "parse_header": "fasta",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wensu.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"wensu.data.{module}"), name)
    globals()[name] = value
    return value
