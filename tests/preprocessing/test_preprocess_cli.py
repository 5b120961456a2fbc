"""``wensu-preprocess`` as a user runs it: console script, temp directory outside the checkout."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_shared

from wensu.data.fasta import read_fasta

CLI = str(Path(sys.executable).with_name("wensu-preprocess"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.shared_data
def test_cli_with_overrides_from_a_temp_directory(tmp_path):
    uniparc = require_shared("sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "mine.fa.gz").write_bytes(gzip.compress(b">x1\nMKV*\n>x2\nMK*V\n"))
    result = _run([f"input=[{uniparc},extra/]", "output=ds", "num_workers=2", "min_length=10",
                   "max_length=1000", "long_policy=split", "shard_size_records=300",
                   "progress=false"], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "records read" in result.stderr and "778" in result.stderr  # the summary table
    assert f"dataset: {tmp_path / 'ds'}" in result.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == 776 + 2
    assert counts["quarantined_by_reason"] == {"internal_stop": 1}
    lengths = [len(r.sequence) for r in read_fasta(uniparc)]
    short = sum(n < 10 for n in lengths) + 1  # and x1 (MKV after the stop is stripped)
    assert counts["filtered_by_reason"] == {"too_short": short}
    assert counts["written_pieces"] == counts["written"] + sum(n > 1000 for n in lengths)
    assert manifest["config"]["max_length"] == 1000
    assert manifest["inputs"][1]["path"] == str(tmp_path / "extra" / "mine.fa.gz")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert (tmp_path / "ds" / shard["path"]).is_file()
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.glob("*.log"))


def test_cli_default_input_print_config_and_errors(tmp_path):
    printed = _run(["--cfg", "job", "num_workers=3"], tmp_path)
    assert printed.returncode == 0 and "num_workers: 3" in printed.stdout
    assert "long_policy: split" in printed.stdout

    default = _run(["output=sample", "progress=false"], tmp_path)  # embedded E. coli sample
    assert default.returncode == 0, default.stderr[-3000:]
    manifest = json.loads((tmp_path / "sample" / "manifest.json").read_text())
    assert manifest["counts"]["read"] == 4363 and manifest["counts"]["duplicates"] == 41
    assert manifest["inputs"][0]["path"].endswith("UP000000625-E.coli.fasta.gz")

    missing = _run(["input=nope.fasta", "output=x"], tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "wensu-preprocess: error: nope.fasta: input not found"
    bad = _run(["split.train=0.5", "output=x"], tmp_path)
    assert bad.returncode == 2 and "split fractions must sum to 1" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr
