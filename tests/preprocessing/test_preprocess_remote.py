"""Inputs and outputs on fsspec paths (memory:// stands in for s3://)."""

from __future__ import annotations

import json

import pytest
from wensu.preprocessing import run_preprocess


def test_fsspec_input_and_output_paths(tmp_path):
    """memory:// stands in for s3://: inputs fetched to the cache, the dataset uploaded."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/wensu-test/in/a.fasta", b">a\nMKV\n>b\nMKL\n>c\nMKV\n")
    output = "memory://wensu-test/out"
    summary = run_preprocess(input=["memory://wensu-test/in"], output=output, progress=False,
                             download={"cache_dir": str(tmp_path / "cache")})  # fmt: skip
    assert summary["output"] == output and summary["counts"]["duplicates"] == 1
    manifest = json.loads(fs.cat("/wensu-test/out/manifest.json"))
    url = manifest["inputs"][0]["url"]
    assert url.startswith("memory://") and url.endswith("/wensu-test/in/a.fasta")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert fs.exists(f"/wensu-test/out/{shard['path']}")
    assert fs.exists("/wensu-test/out/duplicates.tsv")
