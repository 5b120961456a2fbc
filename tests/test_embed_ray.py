"""``wensu-embed executor=ray`` on a local 2-CPU Ray instance: the workers as Ray tasks give the
same file (same bytes) as the local worker processes, resume skips what is done, and the
executor option is checked in one line."""

from __future__ import annotations

import helpers_embed
import pytest
from helpers_embed import ALL_KINDS, h5_bytes, tiny_encoder, write_fasta

from wensu.checkpoint import save_encoder_checkpoint
from wensu.embed import EmbedError, embed

ray = pytest.importorskip("ray", reason="executor=ray needs the [ray] extra")

records = helpers_embed.records


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (start-up is slow on 2 cores)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def inputs(tmp_path, records):
    checkpoint = tmp_path / "tiny.ckpt"
    save_encoder_checkpoint(tiny_encoder(window=8), checkpoint)
    return checkpoint, write_fasta(tmp_path / "p.fa", records)


OPTIONS = dict(pooling=ALL_KINDS, layers=[0, -1], max_tokens=300, max_length=120, progress=False)


def test_ray_tasks_write_the_same_file_as_local_workers(ray_instance, inputs, tmp_path, records):
    checkpoint, fasta = inputs
    local = embed(checkpoint, fasta, tmp_path / "local.h5", devices=2, **OPTIONS)
    remote = embed(checkpoint, fasta, tmp_path / "ray.h5", devices=2, executor="ray", **OPTIONS)
    assert (remote.written, remote.total) == (local.written, local.total) == (8, 8)
    assert any(len(seq) > 120 for _, seq in records)  # the streamed long path ran in Ray too
    assert h5_bytes(tmp_path / "ray.h5") == h5_bytes(tmp_path / "local.h5")
    again = embed(checkpoint, fasta, tmp_path / "ray.h5", devices=2, executor="ray", **OPTIONS)
    assert (again.skipped, again.written) == (8, 0)  # a rerun skips what is done


def test_executor_is_checked_in_one_line(inputs, tmp_path):
    checkpoint, fasta = inputs
    with pytest.raises(EmbedError, match=r"executor must be one of \['local', 'ray'\]"):
        embed(checkpoint, fasta, tmp_path / "e.h5", executor="slurm", progress=False)
