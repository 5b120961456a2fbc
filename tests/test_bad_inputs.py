"""Bad-input catalogue: every CLI run as a user would (subprocess, real small data), per case
the exit code, a one-line message and that nothing was published or lost.

Outcomes: ``error`` (exit 2, one ``error:`` line naming the key/path and cause, no traceback,
nothing published), ``quarantine`` (exit 0, the bad records counted and listed in the report,
the rest published) and ``accepted`` (exit 0 by design). ``OUTCOMES`` counts them; the case list
is the table in the module. Small inputs are built once per module; the catalogue stays within
a few minutes on 2 shared cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from helpers_embed import real_records, write_fasta

from wensu.checkpoint import lightning_checkpoint, save_atomic
from wensu.model import Encoder, EncoderConfig

BIN = Path(sys.executable).parent
TINY_TRAIN = ["data.max_tokens=2048", "data.crop_length=128", "data.num_workers=0", "threads=1",
              "trainer.enable_progress_bar=false", "trainer.max_steps=2"]  # fmt: skip


@dataclass
class Case:
    cli: str
    name: str
    outcome: str  # error | quarantine | accepted
    args: list[str]
    expect: str  # text the message (error) or the report/summary (quarantine) holds
    check: Any = None  # extra check(workspace, result) after the run
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None


class Workspace:
    """Real small inputs, built once: a FASTA sample, a dataset, a checkpoint, an embedding."""

    def __init__(self, root: Path):
        self.root = root
        self.records = real_records(40, max_length=250)
        self.fasta = write_fasta(root / "sample.fasta", self.records)
        self.mixed = write_fasta(
            root / "mixed.fasta", [*self.records[:6], ("bad1", "MKV1J"), ("bad2", "MK*V")]
        )
        self.empty = root / "empty.fasta"
        self.empty.write_bytes(b"")
        self.invalid = write_fasta(root / "invalid.fasta", [("x", "MK1V"), ("y", "12")])
        self.fifo = root / "pipe.fasta"
        os.mkfifo(self.fifo)
        self.a_file = root / "a_file"
        self.a_file.write_text("not a directory\n")
        self.no_fasta_dir = root / "no_fasta"
        self.no_fasta_dir.mkdir()
        (self.no_fasta_dir / "notes.txt").write_text("x\n")
        self.evil, self.marker = _evil_checkpoint(root)
        self.checkpoint = _checkpoint(root / "model.ckpt")
        self.dataset = root / "dataset"
        result = _run("wensu-preprocess", [f"input={self.fasta}", f"output={self.dataset}"], root)
        assert result.returncode == 0, result.stderr[-2000:]
        self.embedded = root / "embedded.h5"
        result = _run("wensu-embed", self._embed_args(self.fasta, self.embedded), root)
        assert result.returncode == 0, result.stderr[-2000:]
        self.changed = write_fasta(
            root / "changed.fasta", [(self.records[0][0], "MKTAYIAKQRQISFVKSHFSRQ")]
        )
        self.nan_h5ad, self.empty_h5ad = _h5ad(root / "nan.h5ad", np.nan), _h5ad(root / "none.h5ad")
        self.stale_run = _stale_run(root / "stale_run", root / "elsewhere")

    def _embed_args(self, fasta: Path, output: Path, *extra: str) -> list[str]:
        return [f"checkpoint={self.checkpoint}", f"input={fasta}", f"output={output}",
                "progress=false", *extra]  # fmt: skip


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(root: Path) -> tuple[Path, Path]:
    marker = root / "code_ran"
    path = root / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Payload(marker)}, path)
    return path, marker


def _checkpoint(path: Path) -> Path:
    """A small wensu checkpoint whose hyper-parameters say it was trained at 254 residues."""
    torch.manual_seed(0)
    cfg = EncoderConfig(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)
    hyper = {"model": cfg.to_dict(), "max_length": 254}
    save_atomic(lightning_checkpoint(Encoder(cfg), hyper), path)
    return path


def _h5ad(path: Path, bad: float | None = None) -> Path:
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    counts = np.array([[1, 2, 3, 4], [2, 2, 1, 1], [4, 0, 2, 1]], dtype=float)
    if bad is None:
        counts = counts[:0]
    else:
        counts[1, 2] = bad
    cells = [f"cell{i}" for i in range(counts.shape[0])]
    obs = pd.DataFrame({"cell_type_coarse": ["B"] * len(cells)}, index=cells)
    var = pd.DataFrame(index=pd.Index([f"G{i}" for i in range(4)], dtype=str))
    ad.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var).write_h5ad(path)
    return path


def _stale_run(run_dir: Path, other_dataset: Path) -> Path:
    """A run dir whose record says it trained on another dataset (and holds a last.ckpt)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"kept as it is")
    info = {"fingerprint": {"dataset": {"dir": str(other_dataset), "manifest_sha256": "0" * 64}}}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    return run_dir


def _run(cli: str, args: list[str], cwd: Path, env=None, stdin=None, timeout=240):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / cli), *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=timeout, input=stdin if stdin is not None else "",
    )  # fmt: skip


# ---- checks run after a case --------------------------------------------------------------


def _unpublished(name):
    return lambda ws, result: not (ws.root / name / "manifest.json").exists()


def _quarantined(name, count):
    def check(ws, result):
        rows = (ws.root / name / "quarantine.tsv").read_text().splitlines()[1:]
        manifest = json.loads((ws.root / name / "manifest.json").read_text())
        return len(rows) == count and manifest["counts"]["quarantined"] == count

    return check


def _no_code_ran(ws, result):
    return not ws.marker.exists()


def _embedding_kept(ws, result):
    with h5py.File(ws.embedded, "r") as handle:
        return len(handle) == len(ws.records)


def _stale_kept(ws, result):
    return (ws.stale_run / "checkpoints" / "last.ckpt").read_bytes() == b"kept as it is" and (
        not (ws.stale_run / "config.yaml").exists()
    )


def _fits_here(model: str) -> bool:
    """The oversized-model case only makes sense where the model cannot fit."""
    import yaml

    from wensu.train.memory import available_bytes, estimate

    repo = Path(__file__).resolve().parents[1]
    cfg = EncoderConfig.from_dict(
        yaml.safe_load((repo / "conf/model" / f"{model}.yaml").read_text())
    )
    available, _ = available_bytes("cpu")
    return available is None or estimate(cfg, 8192, "32-true").total_bytes <= available


def _cases() -> list[Case]:
    P, T, E, V = "wensu-preprocess", "wensu-train", "wensu-embed", "wensu-eval"
    return [
        # wensu-preprocess (proteins)
        Case(P, "empty_fasta", "error", ["input={empty}", "output={root}/p_empty"],
             "no record written", _unpublished("p_empty")),
        Case(P, "all_records_invalid", "error", ["input={invalid}", "output={root}/p_invalid"],
             "quarantine.tsv", _unpublished("p_invalid")),
        Case(P, "some_records_invalid", "quarantine",
             ["input={mixed}", "output={root}/p_mixed"], "", _quarantined("p_mixed", 2)),
        Case(P, "missing_input", "error", ["input={root}/nope.fasta", "output={root}/p_missing"],
             "input not found", _unpublished("p_missing")),
        Case(P, "fifo_input", "error", ["input={fifo}", "output={root}/p_fifo"],
             "not a regular file", _unpublished("p_fifo")),
        Case(P, "stdin_pipe", "error", ["input=/dev/stdin", "output={root}/p_stdin"],
             "not a regular file", _unpublished("p_stdin"), stdin=">a\nMKV\n"),
        Case(P, "folder_without_fasta", "error", ["input={no_fasta_dir}", "output={root}/p_dir"],
             "holds no FASTA files"),
        Case(P, "output_is_a_file", "error", ["input={fasta}", "output={a_file}"],
             "must be a writable directory"),
        Case(P, "num_workers_not_a_number", "error",
             ["input={fasta}", "output={root}/p_nw", "num_workers=abc"], "num_workers"),
        Case(P, "unknown_data_kind", "error", ["data=images", "input={fasta}"], "data=images"),
        # wensu-preprocess data=cells
        Case(P, "cells_nan_quarantined", "quarantine",
             ["data=cells", "input=[{nan_h5ad}]", "output={root}/c_nan",
              "on_non_integer=quarantine", "filters.min_genes=1", "filters.min_cells=1"], "",
             _quarantined("c_nan", 1)),
        Case(P, "cells_nan_error_policy", "error",
             ["data=cells", "input=[{nan_h5ad}]", "output={root}/c_nan_err"], "non-finite value",
             _unpublished("c_nan_err")),
        Case(P, "cells_zero_cells", "error",
             ["data=cells", "input=[{empty_h5ad}]", "output={root}/c_none"], "no cells or no genes",
             _unpublished("c_none")),
        # wensu-train
        Case(T, "max_steps_not_a_number", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={root}/t1", "trainer.max_steps=abc"],
             "trainer.max_steps='abc'"),
        Case(T, "negative_workers", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={root}/t2", "data.num_workers=-3"],
             "data.num_workers=-3"),
        Case(T, "fraction_above_one", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={root}/t3",
              "trainer.limit_val_batches=2.5"], "limit_val_batches"),
        Case(T, "model_reshaped_by_experiment", "error",
             ["model=wensu_1b", "experiment=quickstart", "data.dataset_dir={dataset}",
              "hydra.run.dir={root}/t4"], "conflicts with experiment=quickstart"),
        Case(T, "model_too_big_for_memory", "error",
             ["model=wensu_1b", "data.dataset_dir={dataset}", "hydra.run.dir={root}/t5"],
             "memory preflight"),
        Case(T, "run_dir_is_a_file", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={a_file}"], "hydra.run.dir"),
        Case(T, "dataset_dir_missing", "error",
             ["data.dataset_dir={root}/nope", "hydra.run.dir={root}/t6"], "no such directory"),
        Case(T, "unknown_key", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={root}/t7", "+optim.learning_rate=1"],
             "optim"),
        Case(T, "resume_with_other_dataset", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={stale_run}"], "cannot resume",
             _stale_kept),
        Case(T, "unsafe_checkpoint", "error",
             ["data.dataset_dir={dataset}", "hydra.run.dir={root}/t8", "ckpt_path={evil}",
              *TINY_TRAIN], "posix.system", _no_code_ran),
        # wensu-embed
        Case(E, "changed_sequence_same_id", "error", ["EMBED:{changed}:{embedded}"],
             "different sequence", _embedding_kept),
        Case(E, "window_beyond_trained_context", "error",
             ["EMBED:{fasta}:{root}/e_window.h5", "window=5000"], "window=5000"),
        Case(E, "same_input_again", "accepted", ["EMBED:{fasta}:{embedded}"], "", _embedding_kept),
        Case(E, "empty_input", "error", ["EMBED:{empty}:{root}/e_empty.h5"], "no FASTA records"),
        Case(E, "fifo_input", "error", ["EMBED:{fifo}:{root}/e_fifo.h5"], "not a regular file"),
        Case(E, "some_records_invalid", "quarantine", ["EMBED:{mixed}:{root}/e_mixed.h5"], "",
             lambda ws, r: len((ws.root / "e_mixed.h5.quarantine.tsv").read_text().splitlines())
             >= 2),
        Case(E, "output_is_a_directory", "error", ["EMBED:{fasta}:{no_fasta_dir}"],
             "is a directory"),
        Case(E, "max_tokens_not_a_number", "error",
             ["EMBED:{fasta}:{root}/e_mt.h5", "max_tokens=abc"], "max_tokens"),
        Case(E, "unsafe_checkpoint", "error",
             ["checkpoint={evil}", "input={fasta}", "output={root}/e_evil.h5"], "posix.system",
             _no_code_ran),
        # wensu-eval
        Case(V, "unsafe_checkpoint", "error",
             ["checkpoint={evil}", "probe=perplexity", "output={root}/v_evil"], "posix.system",
             _no_code_ran),
        Case(V, "missing_checkpoint", "error",
             ["checkpoint={root}/nope.ckpt", "probe=perplexity", "output={root}/v_missing"],
             "no such file"),
        Case(V, "empty_fasta_input", "error",
             ["checkpoint={checkpoint}", "probe=interpret", "input={empty}",
              "output={root}/v_empty"], "no FASTA records"),
        Case(V, "fifo_input", "error",
             ["checkpoint={checkpoint}", "probe=interpret", "input={fifo}",
              "output={root}/v_fifo"], "not a regular file"),
        Case(V, "invalid_record_input", "error",
             ["checkpoint={checkpoint}", "probe=interpret", "input={invalid}",
              "output={root}/v_invalid"], "record 'x' is invalid"),
        Case(V, "unknown_probe", "error",
             ["checkpoint={checkpoint}", "probe=nosuch", "output={root}/v_unknown"], "nosuch"),
    ]  # fmt: skip


CASES = _cases()
OUTCOMES = Counter(case.outcome for case in CASES)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("bad_inputs"))


def _expand(case: Case, ws: Workspace) -> list[str]:
    values = {k: str(v) for k, v in vars(ws).items() if isinstance(v, Path)}
    args = []
    for arg in case.args:
        arg = arg.format(**values)
        if arg.startswith("EMBED:"):
            _, fasta, output = arg.split(":")
            args += ws._embed_args(Path(fasta), Path(output))
        else:
            args.append(arg)
    return args


def _skipped(case: Case) -> str | None:
    if case.name == "model_too_big_for_memory" and _fits_here("wensu_1b"):
        return "wensu_1b fits this machine's memory: nothing to refuse"
    return None


@pytest.fixture(scope="module")
def results(workspace) -> dict[str, subprocess.CompletedProcess]:
    """Every case run once, three at a time (the embed cases share an output: one after the
    other, in table order); each test then checks its own."""
    embed_chain = [c for c in CASES if c.cli == "wensu-embed"]
    others = [[c] for c in CASES if c.cli != "wensu-embed"]

    def run_chain(chain: list[Case]) -> list[tuple[str, Any]]:
        return [
            (_key(c), _run(c.cli, _expand(c, workspace), workspace.root, c.env, c.stdin))
            for c in chain
            if not _skipped(c)
        ]

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = pool.map(run_chain, [embed_chain, *others])
        return dict(pair for chain in done for pair in chain)


def _key(case: Case) -> str:
    return f"{case.cli}:{case.name}"


@pytest.mark.parametrize("case", CASES, ids=[_key(c) for c in CASES])
def test_bad_input(workspace, results, case):
    if _skipped(case):
        pytest.skip(_skipped(case))
    result = results[_key(case)]
    output = result.stderr + result.stdout
    assert "Traceback" not in output, output[-3000:]
    if case.outcome == "error":
        assert result.returncode == 2, output[-3000:]
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, result.stderr[-3000:]
        assert case.expect in errors[0], errors[0]
        shown = [line for line in result.stderr.splitlines() if line.strip()]
        assert shown[-1] == errors[0], result.stderr[-3000:]  # the error is the last word
    else:
        assert result.returncode == 0, output[-3000:]
        assert case.expect in output
    if case.check is not None:
        assert case.check(workspace, result), output[-3000:]


def test_catalogue_size_and_outcomes():
    """The catalogue's size and outcome counts (reported in the issue's closing note)."""
    assert len(CASES) == sum(OUTCOMES.values()) and set(OUTCOMES) <= {"error", "quarantine",
                                                                      "accepted"}  # fmt: skip
    per_cli = Counter(case.cli for case in CASES)
    assert all(per_cli[cli] >= 3 for cli in
               ("wensu-preprocess", "wensu-train", "wensu-embed", "wensu-eval"))  # fmt: skip
