"""wensu-embed as a user runs it: the console script, from a directory outside the checkout."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wensu.checkpoint import save_encoder_checkpoint
from wensu.embed import embed
from wensu.embeddings import encode_id, file_info, read
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
from wensu.resources import default_fasta

SCRIPT = Path(sys.executable).with_name("wensu-embed")


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: a tiny checkpoint and a FASTA of real E. coli proteins (gzipped)."""
    root = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    cfg = EncoderConfig(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)
    save_encoder_checkpoint(Encoder(cfg).eval(), root / "tiny.ckpt")
    with gzip.open(default_fasta(), "rt") as handle:
        text = handle.read()
    records = [r for r in text.split(">")[1:] if len("".join(r.split("\n")[1:])) <= 250][:6]
    with gzip.open(root / "proteins.fasta.gz", "wt") as handle:
        handle.write("".join(">" + r for r in records))
    return root


def test_cli_writes_the_same_embeddings_as_the_api(workdir):
    assert not workdir.is_relative_to(Path(__file__).resolve().parents[1])
    args = ["layers=[0,-1]", "pooling=[mean,cls]", "max_tokens=512"]
    done = run_cli(
        workdir, "checkpoint=tiny.ckpt", "input=proteins.fasta.gz", "output=out/emb.h5", *args
    )
    assert done.returncode == 0, done.stderr
    assert "6 embedded" in done.stderr and "0 quarantined" in done.stderr
    embed(
        workdir / "tiny.ckpt",
        workdir / "proteins.fasta.gz",
        workdir / "api.h5",
        layers=[0, -1],
        pooling=["mean", "cls"],
        max_tokens=512,
        progress=False,
    )
    for layer in (0, -1):
        for kind in ("mean", "cls"):
            cli = read(workdir / "out" / "emb.h5", layer=layer, kind=kind)
            api = read(workdir / "api.h5", layer=layer, kind=kind)
            assert sorted(cli) == sorted(api) and len(cli) == 6
            for rid in api:
                np.testing.assert_allclose(cli[rid], api[rid], atol=1e-6)
    info = file_info(workdir / "out" / "emb.h5")
    assert info["checkpoint"] == str(workdir / "tiny.ckpt")
    assert info["layers"] == [0, 2] and info["pooling"] == ["mean", "cls"]
    assert len(info["checkpoint_sha256"]) == 64
    assert not (workdir / "outputs").exists() and not (workdir / ".hydra").exists()

    again = run_cli(
        workdir, "checkpoint=tiny.ckpt", "input=proteins.fasta.gz", "output=out/emb.h5", *args
    )
    assert (
        again.returncode == 0 and "0 embedded" in again.stderr and "6 already done" in again.stderr
    )


def test_cli_npz_format(workdir):
    done = run_cli(
        workdir,
        "checkpoint=tiny.ckpt",
        "input=proteins.fasta.gz",
        "output=npz_out",
        "format=npz",
        "pooling=[mean,per_residue]",
        "progress=false",
    )
    assert done.returncode == 0, done.stderr
    files = sorted((workdir / "npz_out").glob("*.npz"))
    assert len(files) == 6
    reference = read(workdir / "out" / "emb.h5", layer=-1, kind="mean")
    for rid, vector in reference.items():
        data = np.load(workdir / "npz_out" / f"{encode_id(rid)}.npz")
        np.testing.assert_allclose(data["mean_representations/2"], vector, atol=1e-6)
        assert data["representations/2"].shape[1] == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint=missing.ckpt", "input=proteins.fasta.gz", "output=e.h5"], "missing.ckpt"),
        (["checkpoint=tiny.ckpt", "input=empty.fa", "output=e.h5"], "no FASTA records"),
        (["checkpoint=tiny.ckpt", "input=proteins.fasta.gz", "output=tiny.ckpt/e.h5"], "cannot"),
        (["checkpoint=tiny.ckpt", "output=e.h5"], "missing required option input"),
    ],
)
def test_cli_errors_exit_2_with_a_clear_message(workdir, args, message):
    (workdir / "empty.fa").write_text("")
    done = run_cli(workdir, *args)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr
