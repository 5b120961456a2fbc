"""``executor=ray`` on a local 2-CPU Ray instance: the same bytes as ``executor=local``,
malformed records quarantined with file and line as locally, a truncated .gz a one-line error
naming the file, and a worker that dies mid-task retried to the same result."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from wensu.preprocessing import InputError, run_preprocess

ray = pytest.importorskip("ray", reason="executor=ray needs the [ray] extra")

CRASH_FILE_ENV = "WENSU_PREPROCESS_TEST_CRASH_FILE"
SETTINGS = {"chunk_bytes": 4096, "shard_size_records": 40, "max_length": 30, "progress": False}


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """One local Ray instance for the module (start-up is slow on 2 cores)."""
    marker = tmp_path_factory.mktemp("crash") / "crash-once"
    os.environ[CRASH_FILE_ENV] = str(marker)  # inherited by the Ray workers started below
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    os.environ.pop(CRASH_FILE_ENV, None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    directory = tmp_path_factory.mktemp("inputs")
    records = []
    for index in range(600):
        sequence = "MKVLAAGHIKLMNPQRSTVWY"[: 5 + index % 17] * (1 + index % 3)
        if index % 7 == 0:
            sequence = "MKVLAAG"  # exact duplicates across files
        records.append(f">r{index % 550} desc\n{sequence}\n")
    records[123] = ">bad1\nMKV1L\n"  # malformed inside a later part
    records[480] = ">bad2\nMK*LV\n"
    plain = directory / "a.fasta"
    plain.write_text("".join(records[:300]))
    packed = directory / "b.fasta.gz"
    packed.write_bytes(gzip.compress("".join(records[300:]).encode(), mtime=0))
    return [str(plain), str(packed)]


def _outputs(output: Path) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("created")
    files = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*")
             if p.is_file() and p.name != "manifest.json"}  # fmt: skip
    return {"manifest": manifest, **files}


@pytest.fixture(scope="module")
def local_output(inputs, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("local") / "out"
    run_preprocess(input=inputs, output=str(output), num_workers=2, **SETTINGS)
    return _outputs(output)


def test_ray_output_is_identical_to_local(ray_instance, inputs, local_output, tmp_path):
    output = tmp_path / "out"
    run_preprocess(input=inputs, output=str(output), executor="ray",
                   memory_limit="64.05MiB", **SETTINGS)  # fmt: skip
    assert _outputs(output) == local_output
    quarantine = (output / "quarantine.tsv").read_text().splitlines()
    assert any(
        line.startswith("bad1\tinvalid_characters\t")
        and line.endswith("\t247\tcharacters '1' outside the alphabet, first at residue 4")
        for line in quarantine
    )
    assert any(line.startswith("bad2\tinternal_stop\t") for line in quarantine)


def test_ray_worker_killed_mid_task_is_retried_to_the_same_output(
    ray_instance, inputs, local_output, tmp_path
):
    ray_instance.write_text("die once")  # the first shard task to see it ends its worker
    output = tmp_path / "out"
    run_preprocess(input=inputs, output=str(output), executor="ray", **SETTINGS)
    assert not ray_instance.exists()  # a worker did die
    assert _outputs(output) == local_output


def test_ray_truncated_gzip_is_one_line_naming_the_file(ray_instance, tmp_path):
    data = gzip.compress(b"".join(b">r%d\nMKVLAAG\n" % i for i in range(3000)), mtime=0)
    damaged = tmp_path / "cut.fasta.gz"
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as caught:
        run_preprocess(input=[str(damaged)], output=str(tmp_path / "out"), executor="ray",
                       progress=False)  # fmt: skip
    message = str(caught.value)
    assert str(damaged) in message and "\n" not in message and "Ray" not in message
