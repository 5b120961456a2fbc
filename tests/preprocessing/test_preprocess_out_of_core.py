"""Out-of-core deduplication: the same bytes for every worker count and memory_limit, the
decisions of a plain sequential "first occurrence wins" merge, and a clear error when
memory_limit cannot hold what one step needs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers_preprocess import read_tsv
from wensu.preprocessing import ConfigError, run_preprocess

AMINO = "ACDEFGHIKLMNPQRSTVWY"
SETTINGS = {"chunk_bytes": 4096, "shard_size_records": 37, "min_length": 3, "progress": False}
# Leaves room for a few hundred keys per partition (memory.BASE_BYTES is 64 MiB).
SMALL_MEMORY = "64.05MiB"


def _records(seed: int, count: int) -> list[tuple[str, str, bool]]:
    """(id, sequence, inactive): repeated ids, repeated sequences, lowercase, inactive."""
    rng = random.Random(seed)
    pool = ["".join(rng.choice(AMINO) for _ in range(rng.randint(2, 60))) for _ in range(200)]
    out = []
    for index in range(count):
        number = rng.randint(0, 300) if rng.random() < 0.3 else 1000 + index
        record_id = f"UPI{number:010X}"
        if rng.random() < 0.6:
            sequence = rng.choice(pool)
        else:
            sequence = "".join(rng.choice(AMINO) for _ in range(rng.randint(1, 80)))
        out.append((record_id, sequence.lower() if rng.random() < 0.2 else sequence,
                    rng.random() < 0.1))  # fmt: skip
    return out


def _write(path: Path, records) -> None:
    text = "".join(
        f">{rid} status={'inactive' if inactive else 'active'}\n{seq}\n"
        for rid, seq, inactive in records
    )
    path.write_text(text)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[list[str], list]:
    directory = tmp_path_factory.mktemp("inputs")
    records = _records(7, 2400)
    paths = []
    for index, chunk in enumerate((records[:1300], records[1300:])):
        path = directory / f"in{index}.fa"
        _write(path, chunk)
        paths.append(str(path))
    return paths, records


def _outputs(output: Path) -> dict[str, bytes]:
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("created")
    files = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*")
             if p.is_file() and p.name != "manifest.json"}  # fmt: skip
    return {"manifest": json.dumps(manifest, sort_keys=True).encode(), **files}


def _run(inputs, output: Path, **settings) -> dict[str, bytes]:
    run_preprocess(input=inputs, output=str(output), **{**SETTINGS, **settings})
    return _outputs(output)


def test_outputs_identical_for_workers_and_memory_limits(inputs, tmp_path):
    paths, _ = inputs
    reference = _run(paths, tmp_path / "one", num_workers=1)
    assert _run(paths, tmp_path / "two", num_workers=2) == reference
    small = tmp_path / "small"
    outputs = _run(paths, small, num_workers=2, memory_limit=SMALL_MEMORY, keep_work=True)
    plan = json.loads((small / ".work" / "decide" / "plan.json").read_text())
    assert len(plan["i"]) > 2 and len(plan["d"]) > 2, plan  # several partitions were used
    outputs = {k: v for k, v in outputs.items() if not k.startswith(".work/")}
    assert outputs == reference


def test_decisions_match_a_sequential_merge(inputs, tmp_path):
    """Same sequence as an earlier kept record -> duplicate; else an id seen before ->
    duplicate_id; else kept (or filtered)."""
    paths, records = inputs
    run_preprocess(input=paths, output=str(tmp_path / "out"), memory_limit=SMALL_MEMORY,
                   require_active=True, **SETTINGS)  # fmt: skip
    kept_by_sequence: dict[str, str] = {}
    seen_ids: set[str] = set()
    duplicates, duplicate_ids, kept = [], [], []
    for record_id, sequence, inactive in records:
        sequence = sequence.upper()
        if sequence in kept_by_sequence:
            duplicates.append((kept_by_sequence[sequence], record_id))
        elif record_id in seen_ids:
            duplicate_ids.append(record_id)
        else:
            kept_by_sequence[sequence] = record_id
            if not inactive and len(sequence) >= SETTINGS["min_length"]:
                kept.append(record_id)
        seen_ids.add(record_id)
    rows = read_tsv(tmp_path / "out" / "duplicates.tsv")
    assert [(r["kept_id"], r["dropped_id"]) for r in rows] == duplicates
    quarantine = read_tsv(tmp_path / "out" / "quarantine.tsv")
    assert [r["id"] for r in quarantine if r["reason"] == "duplicate_id"] == duplicate_ids
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["written"] == len(kept)


def test_memory_limit_too_small_to_parse_says_what_to_raise(inputs, tmp_path):
    paths, _ = inputs
    with pytest.raises(ConfigError, match=r"memory_limit=.* too small .* raise memory_limit"):
        run_preprocess(input=paths, output=str(tmp_path / "out"), memory_limit="40MB",
                       chunk_bytes=64 << 20)  # fmt: skip


def test_memory_limit_below_one_hash_bucket_says_what_to_raise(tmp_path):
    # 3000 copies of one sequence share one digest bucket, which no partition can split.
    path = tmp_path / "same.fa"
    path.write_text("".join(f">r{i}\nMKV\n" for i in range(3000)))
    with pytest.raises(ConfigError, match=r"too small to make progress.*raise memory_limit to"):
        run_preprocess(input=[str(path)], output=str(tmp_path / "out"), memory_limit="64.1MiB",
                       chunk_bytes=4096, progress=False)  # fmt: skip


def test_memory_limit_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="memory_limit must be a size"):
        run_preprocess(input=[], output=str(tmp_path / "out"), memory_limit="lots")
