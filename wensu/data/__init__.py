"""Data path: FASTA reading, HDF5 shards, token-budget batching, MLM masking."""

from wensu.data.collate import collate_records, collate_tokens
from wensu.data.dataset import ShardedDataset
from wensu.data.masking import IGNORE_INDEX, mask_tokens
from wensu.data.sampler import TokenBudgetBatchSampler
from wensu.data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    DatasetIntegrityError,
    ManifestError,
    read_manifest,
    sha256_file,
    shard_name,
    write_manifest,
    write_shard,
)

__all__ = [
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "MANIFEST_NAME",
    "SPLITS",
    "DatasetIntegrityError",
    "ManifestError",
    "ShardedDataset",
    "TokenBudgetBatchSampler",
    "collate_records",
    "collate_tokens",
    "mask_tokens",
    "read_manifest",
    "sha256_file",
    "shard_name",
    "write_manifest",
    "write_shard",
]
