"""``wensu-eval`` as a user runs it: console script, temp directory outside the checkout, a
random-init tiny checkpoint, ``subset=fast`` with sizes capped further by overrides."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.checkpoint import load, save_encoder_checkpoint
from wensu.data.fasta import read_fasta
from wensu.data.shards import sha256_file
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.context import stable_subset
from wensu.probes.perplexity.probe import mask_sequences, masked_nll, perplexity

SCRIPT = Path(sys.executable).with_name("wensu-eval")
SMALL = [
    "subset=fast",
    "progress=false",
    "probe.ss.fast.max_train=20",
    "probe.ss.fast.max_valid=8",
    "probe.ss.fast.test_sets=[casp12]",
    "probe.ss.per_class_table_set=casp12",
    "probe.ss.fast.training.max_epochs=2",
    "probe.contacts.train_size=4",
    "probe.contacts.fast.test_limit=3",
    "probe.amr.fast.max_per_class=4",
    "probe.amr.fast.max_per_side=10",
    "probe.perplexity.fast.max_sequences=20",
]


def run_eval(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    data = require_shared("")
    work = tmp_path_factory.mktemp("eval")
    torch.manual_seed(123)
    checkpoint = work / "tiny.ckpt"
    save_encoder_checkpoint(
        Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32)), checkpoint
    )
    args = [f"checkpoint={checkpoint}", "output=report", f"data_dir={data}", *SMALL]
    report = work / "report"
    # killed (SIGKILL) once the first probe has written its metrics, then resumed
    killed = subprocess.Popen(
        [str(SCRIPT), *args], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (report / "ss" / "metrics.json").exists() and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    first = run_eval(work, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    snapshot = {
        p: (report / p / "metrics.json").read_bytes()
        for p in ("ss", "contacts", "amr", "perplexity")
    }
    second = run_eval(work, *args)
    return {
        "work": work,
        "report": report,
        "checkpoint": checkpoint,
        "data": data,
        "first": first,
        "second": second,
        "snapshot": snapshot,
    }


def _metrics(evaluated, probe: str) -> dict:
    return json.loads((evaluated["report"] / probe / "metrics.json").read_text())


def test_report_tables_show_each_metric_next_to_its_baselines(evaluated):
    text = (evaluated["report"] / "report.md").read_text()
    assert "| task | head | metric | model | random-init | one-hot |" in text
    assert "| task | metric | model | random-init | AA composition | 3-mer composition |" in text
    assert "| perplexity SCOP | masked PPL |" in text and "unigram (corpus)" in text
    assert "| contacts pdb_entries | long P@L |" in text
    assert "| SS3 CASP12 | conv | Q3 |" in text and "| SS8 CASP12 | linear | F1 H |" in text
    for figure in (
        "ss/accuracy.png",
        "amr/confusion_model.png",
        "amr/confusion_3-mer_composition.png",
    ):
        assert f"![{figure}]({figure})" in text
        assert (evaluated["report"] / figure).stat().st_size > 1000
    assert list((evaluated["report"] / "contacts").glob("map_*.png"))
    assert not (evaluated["work"] / "outputs").exists()  # no Hydra run folders in the cwd


def test_metrics_json_records_provenance(evaluated):
    checkpoint_hash = sha256_file(evaluated["checkpoint"])
    for probe in ("ss", "contacts", "amr", "perplexity"):
        metrics = _metrics(evaluated, probe)
        assert metrics["checkpoint"]["sha256"] == checkpoint_hash
        assert metrics["seed"] == 0 and metrics["fingerprint"]["subset"] == "fast"
        assert {"torch", "numpy", "scikit-learn", "python"} <= set(metrics["versions"])
        assert metrics["inputs"] and all(len(i["sha256"]) == 64 for i in metrics["inputs"])
        assert metrics["rows"]
    ss_inputs = {Path(i["path"]).name: i["sha256"] for i in _metrics(evaluated, "ss")["inputs"]}
    zip_path = (
        evaluated["data"]
        / "structure/secondary_structure/flip_prott5/secondary_structure_splits.zip"
    )
    assert ss_inputs["secondary_structure_splits.zip"] == sha256_file(zip_path)


def test_probe_sizes_follow_the_overrides(evaluated):
    ss = _metrics(evaluated, "ss")["details"]
    assert ss["training_sizes"] == {
        "ss3": {"train": 20, "valid": 8},
        "ss8": {"train": 20, "valid": 8},
    }
    assert ss["test_sizes"] == {"casp12": 20}
    for row in _metrics(evaluated, "ss")["rows"]:
        assert set(row["values"]) == {"model", "random-init", "one-hot"}
        assert all(0.0 <= v <= 1.0 for v in row["values"].values() if v == v)
    contacts = _metrics(evaluated, "contacts")["details"]
    assert contacts["structures"]["pdb_entries"]["evaluated"] == 3
    assert contacts["regression"]["model"]["weights"] == 2 * 2  # layers x heads
    amr = _metrics(evaluated, "amr")["details"]
    assert amr["drug_class"]["proteins"] == 4 * len(amr["drug_class"]["classes"])
    assert amr["drug_class"]["family_disjoint_folds"] is True


def test_perplexity_equals_an_independent_computation(evaluated):
    values = _metrics(evaluated, "perplexity")["details"]["perplexity"]
    assert values["uniform (20)"] == 20.0
    path = evaluated["data"] / "sequences/scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz"
    records = [(r.id, r.sequence.decode()) for r in read_fasta(path)]
    sequences = [s for _, s in stable_subset(records, 20, key=lambda r: r[0])]
    encoder, alphabet = load(evaluated["checkpoint"])
    masked = mask_sequences(sequences, alphabet, seed=0)
    expected = perplexity(*masked_nll(encoder, alphabet, masked, show_progress=False))
    assert values["model"] == pytest.approx(expected, rel=1e-4)
    assert alphabet.tokens == get_alphabet().tokens


def test_killed_run_resumes_without_redoing_finished_probes(evaluated):
    assert "ss: reusing" in evaluated["first"].stderr
    assert not list(evaluated["report"].rglob("*.tmp"))


def test_rerun_reuses_finished_probes(evaluated):
    second = evaluated["second"]
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stderr.count("reusing") == 4
    run = json.loads((evaluated["report"] / "run.json").read_text())
    assert run["reused"] == ["ss", "contacts", "amr", "perplexity"]
    assert run["command"].startswith("wensu-eval checkpoint=") and run["seconds"] > 0
    for probe, content in evaluated["snapshot"].items():
        assert (evaluated["report"] / probe / "metrics.json").read_bytes() == content


def test_one_probe_and_bad_inputs(evaluated, tmp_path):
    ckpt = evaluated["checkpoint"]
    only = run_eval(
        tmp_path,
        f"checkpoint={ckpt}",
        "output=out",
        f"data_dir={evaluated['data']}",
        "probe=[perplexity]",
        "subset=fast",
        "probe.perplexity.fast.max_sequences=10",
    )
    assert only.returncode == 0, only.stderr[-2000:]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["perplexity", "report.md", "run.json"]
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    result = run_eval(tmp_path, f"checkpoint={bad}", "output=out2", *SMALL)
    assert (
        result.returncode == 2 and "bad.ckpt" in result.stderr and "Traceback" not in result.stderr
    )
    missing = run_eval(tmp_path, "output=out3")
    assert missing.returncode == 2 and "checkpoint=" in missing.stderr
    wrong = run_eval(tmp_path, f"checkpoint={ckpt}", "subset=huge", f"data_dir={evaluated['data']}")
    assert wrong.returncode == 2 and "subset must be 'full' or 'fast'" in wrong.stderr
    no_data = run_eval(
        tmp_path, f"checkpoint={ckpt}", f"data_dir={tmp_path}", "fetch=false", *SMALL
    )
    assert no_data.returncode == 2 and "data_dir" in no_data.stderr
    threads = run_eval(tmp_path, f"checkpoint={ckpt}", "cpu_threads=0", *SMALL)
    assert threads.returncode == 2 and "cpu_threads must be" in threads.stderr


def _perplexity_row(report: Path) -> str:
    return next(
        line for line in (report / "report.md").read_text().splitlines() if "masked PPL" in line
    )


def test_hugging_face_esm2_folder_gives_the_same_numbers(evaluated, tmp_path):
    """An ESM-2 Hugging Face folder (written from the same weights) goes through wensu.load."""
    from wensu.interop.hf import save_hf

    encoder, _ = load(evaluated["checkpoint"])
    save_hf(encoder, tmp_path / "hf")
    rows = []
    for name, checkpoint in (("hf", tmp_path / "hf"), ("ckpt", evaluated["checkpoint"])):
        args = [
            f"checkpoint={checkpoint}",
            f"output={name}",
            f"data_dir={evaluated['data']}",
            "probe=[perplexity]",
            "subset=fast",
            "probe.perplexity.fast.max_sequences=10",
        ]
        result = run_eval(tmp_path, *args)
        assert result.returncode == 0, result.stderr[-2000:]
        rows.append(_perplexity_row(tmp_path / name))
    assert rows[0] == rows[1]


def test_windowed_model_reports_the_window_limit(evaluated, tmp_path):
    torch.manual_seed(7)
    config = EncoderConfig(
        num_layers=1,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        attention={"backend": "chunked", "window": 16},
    )
    save_encoder_checkpoint(Encoder(config), tmp_path / "win.ckpt")
    result = run_eval(
        tmp_path,
        f"checkpoint={tmp_path / 'win.ckpt'}",
        "output=out",
        f"data_dir={evaluated['data']}",
        "probe=[contacts]",
        *SMALL[:2],
        "probe.contacts.train_size=4",
        "probe.contacts.fast.test_limit=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    details = json.loads((tmp_path / "out/contacts/metrics.json").read_text())["details"]
    assert details["long_range_contacts_beyond_window"] == 1.0  # every >= 24 pair is beyond 16
    assert "Windowed model (window 16)" in (tmp_path / "out/report.md").read_text()
