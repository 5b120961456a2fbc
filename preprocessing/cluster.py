"""MMseqs2: ``easy-linclust`` to group similar sequences before splitting, and ``easy-search``
(test vs train) to report how similar the held-out split still is to the training split.

Sequences are written with their index as FASTA id, so record ids never reach MMseqs2's own
header parsing. Cluster membership does not depend on the thread count (MMseqs2 only reorders
its output lines), and the result is read back as a mapping, so the order does not matter.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import ToolError


def find_mmseqs(executable: str = "mmseqs") -> str:
    """Absolute path of the MMseqs2 binary or a :class:`ToolError` saying how to install it."""
    found = shutil.which(executable)
    if found is None:
        raise ToolError(
            f"cluster.enabled=true needs MMseqs2, but {executable!r} is not on PATH; install it "
            "(Debian/Ubuntu: apt-get install mmseqs2; conda: mmseqs2) or set cluster.mmseqs"
        )
    return found


def write_indexed_fasta(path: Path, sequences: Iterable[tuple[int, bytes]]) -> int:
    """Write ``>index`` records (one line each); returns the number written."""
    count = 0
    with open(path, "wb") as handle:
        for index, sequence in sequences:
            handle.write(b">%d\n%s\n" % (index, sequence))
            count += 1
    return count


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ToolError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n" + "\n".join(tail)
        )


def linclust(
    fasta: Path,
    work_dir: Path,
    count: int,
    *,
    min_seq_id: float,
    coverage: float,
    cov_mode: int,
    threads: int,
    mmseqs: str = "mmseqs",
) -> np.ndarray:
    """Cluster ``count`` indexed sequences; returns the representative index of each."""
    binary = find_mmseqs(mmseqs)
    work_dir.mkdir(parents=True, exist_ok=True)
    prefix = work_dir / "linclust"
    command = [
        binary, "easy-linclust", str(fasta), str(prefix), str(work_dir / "tmp"),
        "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", str(cov_mode),
        "--threads", str(threads), "-v", "1",
    ]  # fmt: skip
    _run(command, "MMseqs2 easy-linclust")
    representative = np.full(count, -1, dtype=np.int64)
    with open(f"{prefix}_cluster.tsv", encoding="ascii") as handle:
        for line in handle:
            rep, member = line.split()
            representative[int(member)] = int(rep)
    missing = np.flatnonzero(representative < 0)
    if missing.size:
        raise ToolError(f"MMseqs2 easy-linclust left {missing.size} sequences unclustered")
    return representative


def max_identity(
    query: Path,
    target: Path,
    work_dir: Path,
    *,
    coverage: float,
    cov_mode: int = 0,
    min_seq_id: float = 0.5,
    threads: int,
    sensitivity: float = 5.7,
    mmseqs: str = "mmseqs",
) -> dict:
    """``easy-search`` query (test) vs target (train).

    ``max_identity``: the highest fraction identity among alignments that meet the clustering's
    coverage rule (``cov_mode`` 0: both sequences >= ``coverage``, 1: target, 2: query), i.e.
    the pairs linclust could have put in one cluster; ``max_identity_any_alignment``: over every
    alignment (local fragments included); plus how many test sequences have such hits.
    Linclust is greedy and linear-time, so some pairs above ``min_seq_id`` across splits are
    expected; these numbers say how many.
    """
    binary = find_mmseqs(mmseqs)
    work_dir.mkdir(parents=True, exist_ok=True)
    empty = {"max_identity": None, "max_identity_any_alignment": None, "queries_with_hit": 0}
    if query.stat().st_size == 0 or target.stat().st_size == 0:
        return empty
    hits = work_dir / "search.m8"
    command = [
        binary, "easy-search", str(query), str(target), str(hits), str(work_dir / "tmp"),
        "--format-output", "query,target,fident,qcov,tcov", "-s", str(sensitivity),
        "--threads", str(threads), "-v", "1",
    ]  # fmt: skip
    _run(command, "MMseqs2 easy-search")
    best_any: dict[str, float] = {}
    best_covered: dict[str, float] = {}
    with open(hits, encoding="ascii") as handle:
        for line in handle:
            query_id, _, fident, qcov, tcov = line.split("\t")
            identity = float(fident)
            best_any[query_id] = max(best_any.get(query_id, 0.0), identity)
            if _covered(float(qcov), float(tcov), coverage, cov_mode):
                best_covered[query_id] = max(best_covered.get(query_id, 0.0), identity)
    if not best_any:
        return empty
    covered = np.array(list(best_covered.values()))
    with open(query, "rb") as handle:
        queries = sum(1 for line in handle if line.startswith(b">"))
    return {
        "max_identity": float(covered.max()) if covered.size else None,
        "max_identity_any_alignment": max(best_any.values()),
        "coverage": coverage,
        "queries": queries,
        "queries_with_hit": len(best_any),
        "cov_mode": cov_mode,
        "queries_with_covered_hit": int(covered.size),
        "queries_with_covered_hit_at_or_above_min_seq_id": int((covered >= min_seq_id).sum()),
        "queries_with_covered_hit_at_or_above_0.9": int((covered >= 0.9).sum()),
    }


def _covered(qcov: float, tcov: float, coverage: float, cov_mode: int) -> bool:
    if cov_mode == 1:
        return tcov >= coverage
    if cov_mode == 2:
        return qcov >= coverage
    return min(qcov, tcov) >= coverage
