"""experiments/gpu: the prepared GPU checks run end to end at tiny sizes on the CPU (dry run),
each stage records numbers, a failing or overrunning stage is recorded and the run goes on."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_shared

GPU_DIR = REPO_ROOT / "experiments" / "gpu"
sys.path.insert(0, str(GPU_DIR))

import checks  # noqa: E402
from common import register_subpackage  # noqa: E402

RETURNED_FILES_LIMIT = 8  # the device tool brings back at most 8 files from $OUT


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHON": sys.executable, **extra}
    env.pop("WENSU_GPU_CHECKS_COMMAND", None)
    return env


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, Path]:
    """prepare_carry.sh --dry-run, then run_checks.sh --dry-run: the results and $OUT."""
    shared = require_shared("structure")
    root = tmp_path_factory.mktemp("gpu")
    carry, out = root / "carry", root / "out"
    env = _env(WENSU_SHARED_DATA=str(shared.parent))
    prepared = subprocess.run(
        [str(GPU_DIR / "prepare_carry.sh"), "--dry-run", "--carry", str(carry)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    done = subprocess.run(
        [str(GPU_DIR / "run_checks.sh"), "--dry-run", "--carry", str(carry),
         "--scratch", str(root / "scratch")],
        env=_env(OUT=str(out)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    return json.loads((out / "gpu_checks.json").read_text()), out


@pytest.mark.slow
def test_dry_run_records_every_stage_with_numbers(dry_run):
    payload, out = dry_run
    assert payload["dry_run"] is True
    assert payload["command"].startswith("experiments/gpu/run_checks.sh --dry-run")
    assert payload["environment"]["versions"]["torch"]
    stages = payload["stages"]
    assert list(stages) == list(checks.ORDER)
    failed = {n: s.get("error") for n, s in stages.items() if s["status"] != "ok"}
    assert not failed, failed

    throughput = stages["throughput"]
    assert _number(throughput["peak_bf16_tflops_used"]) and _number(
        throughput["measured_matmul_tflops"]
    )
    for name in ("esm2_8m", "esm2_35m", "esm2_150m"):
        entry = throughput["models"][name]
        for variant in ("wensu_packed", "hf_packed", "hf_padded"):
            row = entry["variants"][variant]
            assert row["status"] == "ok", (name, variant, row)
            assert all(_number(row[k]) for k in ("tokens_per_s", "mfu_vs_datasheet", "peak_gib"))
        assert _number(entry["ratio_wensu_over_hf_packed"])
        assert _number(entry["ratio_wensu_over_hf_padded"])

    attention = stages["attention"]
    for rows in attention["results"].values():
        for backend in ("flex", "chunked", "dense_masked", "sdpa_flash"):
            assert rows[backend]["status"] == "ok" and _number(rows[backend]["seconds"])
    assert attention["gradient_check"]["chunked"]["equal_within_tolerance"] is True
    assert all(attention["ratios"].values())

    longest = stages["longest_context"]["longest"]
    assert _number(longest["without_checkpointing"])
    assert _number(longest["with_checkpointing"]) or longest["with_checkpointing"] == (
        "not available"
    )

    summary = stages["pretrain"]["summary"]
    assert _number(summary["val_perplexity"]) and _number(summary["unigram_baseline_perplexity"])
    assert summary["tokens_seen"] > 0 and len(stages["pretrain"]["curve"]) >= 1

    table = stages["probes"]["table"]
    ss3 = table["SS3 CB513 Q3 linear"]
    assert set(ss3) == {"model", "random-init", "one-hot"} and all(map(_number, ss3.values()))
    contact_rows = [v for k, v in table.items() if k.startswith("contacts")]
    assert contact_rows and all(_number(v["model"]) for v in contact_rows)

    assert stages["ddp"]["global_step"] == 2 and _number(stages["ddp"]["step_s"])
    assert stages["fsdp"]["parameters"] > 0 and "needs GPUs" in stages["fsdp"]["detail"]

    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= RETURNED_FILES_LIMIT, files
    assert {"gpu_checks.json", "throughput.png", "attention.png", "pretrain.png"} <= set(files)


def test_failing_stage_is_recorded_and_the_next_stage_runs(tmp_path):
    """probes without a pretrained checkpoint fails; fsdp after it still runs and reports."""
    out = tmp_path / "out"
    checks.main(["--dry-run", "--carry", str(tmp_path / "none"), "--out", str(out),
                 "--scratch", str(tmp_path / "scratch"), "--stages", "probes", "fsdp"])  # fmt: skip
    stages = json.loads((out / "gpu_checks.json").read_text())["stages"]
    assert stages["probes"]["status"] == "error"
    assert "no pretrained checkpoint" in stages["probes"]["error"]
    assert stages["fsdp"]["status"] == "ok" and stages["fsdp"]["parameters"] > 0


def test_stage_over_its_time_is_killed_and_recorded(tmp_path):
    """Process isolation: a stage past its time is killed, the run records it as timeout."""
    args = argparse.Namespace(dry_run=True, carry=str(tmp_path), scratch=str(tmp_path))
    spec = {**checks.stage_specs(args, "cpu")["fsdp"], "figure_dir": str(tmp_path)}
    row = checks.run_stage("fsdp", spec, timeout=0.5, scratch=tmp_path)
    assert row["status"] == "timeout" and "time guard" in row["error"]


def test_register_subpackage_maps_a_folder_once(tmp_path, monkeypatch):
    """The install-time mapping conf/ -> wensu.conf, made at run time for an uninstalled tree."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "__init__.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert register_subpackage("pkg.conf_alias", tmp_path / "conf") is True
    import pkg.conf_alias

    assert pkg.conf_alias.VALUE == 7
    assert register_subpackage("pkg.conf_alias", tmp_path / "conf") is False
    for name in ("pkg.conf_alias", "pkg"):
        sys.modules.pop(name, None)


def test_prepare_carry_names_missing_shared_data(tmp_path):
    done = subprocess.run(
        [sys.executable, "-P", str(GPU_DIR / "prepare_carry.py"), "--carry", str(tmp_path / "c")],
        env=_env(WENSU_SHARED_DATA=str(tmp_path / "nowhere")), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and str(tmp_path / "nowhere") in done.stderr
    assert "not found (set WENSU_SHARED_DATA)" in done.stderr


def test_full_run_refuses_a_machine_without_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert checks.main(["--out", str(tmp_path), "--scratch", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_gpu_stage_budgets_fit_the_time_guard():
    assert sum(checks.GPU_BUDGET.values()) <= 455
    assert checks.PRETRAIN_MAX_S >= checks.GPU_BUDGET["pretrain"]


def test_proteome_shards_leave_out_the_largest_file_to_fit(tmp_path):
    """Over the byte budget, the largest proteome file is left out and named in the result."""
    import gzip

    import prepare_carry

    from wensu.data.fasta import read_fasta
    from wensu.resources import default_fasta

    folder = tmp_path / "shared" / "sequences" / "uniprot_proteomes"
    folder.mkdir(parents=True)
    records = list(read_fasta(default_fasta()))[:300]
    for name, count in (("a", 40), ("big", 200), ("c", 60)):
        lines = [f">{r.id}\n{r.sequence.decode()}\n" for r in records[:count]]
        records = records[count:]
        with gzip.open(folder / f"{name}.fasta.gz", "wt") as handle:
            handle.writelines(lines)
    carry = tmp_path / "carry"
    whole = prepare_carry.proteome_shards(carry, tmp_path / "shared", False, budget=1e12)
    assert whole["dropped_to_fit"] == []
    fitted = prepare_carry.proteome_shards(
        carry, tmp_path / "shared", False, budget=whole["bytes"] * 0.6
    )
    assert fitted["dropped_to_fit"] == ["big.fasta.gz"]
    assert fitted["inputs"] == ["a.fasta.gz", "c.fasta.gz"]
    assert fitted["bytes"] <= whole["bytes"] * 0.6
