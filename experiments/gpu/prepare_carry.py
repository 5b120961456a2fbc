"""Build ``gpu_carry/``: everything the GPU checks need that the device machine lacks.

* ``proteomes/``: ``wensu-preprocess`` shards of the shared UniProt proteomes (the dry run:
  the embedded E. coli sample), for the throughput, pretraining and DDP/FSDP stages;
* ``data/structure/...``: the probe files, at the paths the probes expect under a data root
  (CB513 and the FLIP/CullPDB training sets of the SS probe; CATH-103 and TS50 of the contact
  probe);
* ``wheels/``: the packages wensu needs that the GPU image does not hold (hydra-core,
  omegaconf, antlr4-python3-runtime, biopython), at the versions installed here, for CPython
  3.12 on x86-64 Linux (the image's python3);
* ``carry.json``: what is in it, with sizes and SHA-256 of the data files.

The whole working tree that travels with a device call must stay within 64 MiB: the proteome
shards get what the tree, the probe files and the wheels leave (up to ``--max-mib`` for the
whole carry, default 52); when all 15 proteomes do not fit, the largest proteome files are left
out one at a time, and ``carry.json`` names them.

    experiments/gpu/prepare_carry.sh               # real carry (needs PyPI for the wheels)
    experiments/gpu/prepare_carry.sh --dry-run --carry /tmp/carry   # tiny, no downloads
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE_FILES = (
    "structure/secondary_structure/netsurfp2_prottrans/CB513_HHblits.csv.gz",
    "structure/secondary_structure/flip_prott5/secondary_structure_splits.zip",
    "structure/secondary_structure/icml2014_cullpdb_kaggle_mirror/cullpdb6133filtered_train.csv.gz",
    "structure/contact_sets/pi_rldif/cath42_test_single_chain.json.gz",
    "structure/contact_sets/ts50_gvp/ts50.json.gz",
)
PURE_WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime")
BINARY_WHEELS = ("biopython",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


class CarryError(RuntimeError):
    """The carry cannot be built; the message says why and what to do."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def preprocess(output: Path, inputs: list[Path]) -> int:
    """``wensu-preprocess`` of ``inputs`` (none: the embedded sample) into ``output``; bytes."""
    source = "[" + ",".join(str(p) for p in inputs) + "]"
    command = [sys.executable, "-m", "wensu.preprocessing.cli", f"input={source}",
               f"output={output}", "num_workers=2", "overwrite=true"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CarryError(f"wensu-preprocess failed: {done.stderr.strip()[-500:]}")
    return folder_bytes(output)


def proteome_shards(carry: Path, shared: Path, dry_run: bool, budget: float) -> dict:
    """Shards of the shared proteomes within ``budget`` bytes: all 15 when they fit, else without
    the largest proteome files, one at a time (the dry run: the embedded sample)."""
    output = carry / "proteomes"
    if dry_run:
        return {"dir": output.name, "bytes": preprocess(output, []), "inputs": "embedded sample"}
    folder = shared / "sequences" / "uniprot_proteomes"
    if not folder.is_dir():
        raise CarryError(f"{folder}: not found (set WENSU_SHARED_DATA)")
    inputs = sorted(folder.glob("*.fasta.gz"))
    dropped: list[str] = []
    while True:
        size = preprocess(output, inputs)
        if size <= budget or len(inputs) == 1:
            break
        largest = max(inputs, key=lambda p: p.stat().st_size)
        inputs.remove(largest)
        dropped.append(largest.name)
    return {"dir": output.name, "bytes": size, "inputs": [p.name for p in inputs],
            "dropped_to_fit": dropped}  # fmt: skip


def copy_probe_files(carry: Path, shared: Path) -> list[dict]:
    rows = []
    for relative in PROBE_FILES:
        source = shared / relative
        if not source.is_file():
            raise CarryError(f"{source}: probe file not found (set WENSU_SHARED_DATA)")
        target = carry / "data" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        rows.append({"path": relative, "bytes": target.stat().st_size, "sha256": sha256(target)})
    return rows


def fetch_wheels(carry: Path) -> list[str]:
    """Wheels of the packages the GPU image lacks, at the versions installed here."""
    folder = carry / "wheels"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pure = [f"{name}=={version(name)}" for name in PURE_WHEELS]
    # antlr4-python3-runtime 4.9.3 is published as source only: pip builds a pure-python wheel.
    steps = [pip + ["wheel", "--no-deps", "-q", "-w", str(folder), *pure]]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name in BINARY_WHEELS:
        steps.append(
            pip + ["download", "--no-deps", "-q", "--only-binary=:all:", "--python-version",
                   "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                   f"{name}=={version(name)}"]
        )  # fmt: skip
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise CarryError(f"{' '.join(command[3:6])}...: {done.stderr.strip()[-400:]}")
    return sorted(p.name for p in folder.glob("*.whl"))


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip()


def tree_bytes() -> int:
    """Bytes of the files that travel besides the carry: tracked and untracked-not-ignored."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    )  # fmt: skip
    total = 0
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if name and path.is_file():
            total += path.stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carry", type=Path, default=REPO / "gpu_carry")
    parser.add_argument("--dry-run", action="store_true", help="embedded sample, no wheels")
    parser.add_argument("--no-wheels", action="store_true")
    parser.add_argument("--max-mib", type=float, default=52.0)
    args = parser.parse_args(argv)
    shared = Path(os.environ.get("WENSU_SHARED_DATA") or REPO.parent / "shared" / "data")
    carry = args.carry.resolve()
    carry.mkdir(parents=True, exist_ok=True)
    try:
        probe_files = copy_probe_files(carry, shared)
        wheels = [] if (args.dry_run or args.no_wheels) else fetch_wheels(carry)
        tree = tree_bytes()
        # The proteome shards get what the 64 MiB call limit leaves (1 MiB kept as margin).
        others = sum(folder_bytes(carry / name) for name in ("data", "wheels"))
        budget = min(args.max_mib, 63 - tree / 2**20) * 2**20 - others
        proteomes = proteome_shards(carry, shared, args.dry_run, budget)
    except CarryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = folder_bytes(carry)
    manifest = {
        "proteomes": proteomes,
        "probe_files": probe_files,
        "wheels": wheels,
        "carry_bytes": size,
        "built_at_commit": git("rev-parse", "HEAD"),
        "tree_dirty_at_build": bool(git("status", "--porcelain", "--untracked-files=no")),
        "tree_bytes_besides_carry": tree,
    }
    (carry / "carry.json").write_text(json.dumps(manifest, indent=1) + "\n")
    mib = size / 2**20
    total = (size + manifest["tree_bytes_besides_carry"]) / 2**20
    print(f"{carry}: {mib:.1f} MiB (with the working tree {total:.1f} MiB of the 64 MiB limit)")
    if mib > args.max_mib or total > 64:
        print(f"error: {carry} is {mib:.1f} MiB, over --max-mib {args.max_mib} or the 64 MiB "
              "limit with the tree", file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
