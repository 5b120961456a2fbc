"""Stage 3 of the pipeline: cluster the kept sequences with MMseqs2 and report identity.

While parts are merged, :meth:`ClusterStage.collect` remembers each kept record's id and
digest and writes its sequence for MMseqs2; :meth:`ClusterStage.cluster` then gives every
kept record its cluster representative (cached in the work directory, so a rerun after a
kill does not cluster again). Records are routed by their representative's digest, so a
cluster never straddles two splits.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import cluster as mmseqs
from .dedup import KEEP
from .parse import DIGEST_SIZE, Part

log = logging.getLogger("wensu.preprocessing")

IDENTITY_SPLITS = ("train", "test")


class ClusterStage:
    """Kept ids/digests, their MMseqs2 representatives and the test-vs-train identity files.

    ``settings`` is the ``cluster`` section of the preprocessing config; ``threads`` the
    MMseqs2 thread count.
    """

    def __init__(self, work: Path, settings: dict, threads: int):
        self.work, self.settings, self.threads = Path(work), settings, threads
        self.kept_ids: list[str] = []
        self.kept_digests: list[bytes] = []
        self.representative = np.zeros(0, dtype=np.int64)
        directory = self.work / "cluster"
        directory.mkdir(parents=True, exist_ok=True)
        self.cache = directory / "representative.npy"
        self.fasta = None if self.cache.exists() else open(directory / "kept.fasta", "wb")
        self.identity_fasta = None
        if settings["identity_report"]:
            (self.work / "identity").mkdir(parents=True, exist_ok=True)
            self.identity_fasta = {
                s: open(self.work / "identity" / f"{s}.fasta", "wb") for s in IDENTITY_SPLITS
            }

    def collect(self, part: Part, codes: np.ndarray) -> None:
        """Remember kept ids/digests (cluster keys) and write kept sequences for MMseqs2."""
        offsets = part.seq_offsets.tolist()
        for i in np.flatnonzero(codes == KEEP).tolist():
            self.kept_ids.append(part.ids[i])
            self.kept_digests.append(part.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
            if self.fasta is not None:
                sequence = part.residues[offsets[i] : offsets[i + 1]].tobytes()
                self.fasta.write(b">%d\n%s\n" % (len(self.kept_ids) - 1, sequence))

    def cluster(self) -> None:
        """Representative (kept index) of every kept record, from cache or MMseqs2."""
        if self.fasta is None:
            self.representative = np.load(self.cache, allow_pickle=False)
            return
        self.fasta.close()
        cfg = self.settings
        count = len(self.kept_ids)
        log.info("clustering %d sequences with MMseqs2 easy-linclust", count)
        self.representative = mmseqs.linclust(
            Path(self.fasta.name),
            self.work / "cluster" / "linclust",
            count,
            min_seq_id=cfg["min_seq_id"],
            coverage=cfg["coverage"],
            cov_mode=cfg["cov_mode"],
            threads=self.threads,
            mmseqs=cfg["mmseqs"],
        )
        tmp = self.cache.with_name("representative.tmp.npy")
        np.save(tmp, self.representative)
        tmp.replace(self.cache)

    def keys_and_clusters(self, first_kept: int, count: int) -> tuple[list[bytes], list[str]]:
        """Split keys (representative digests) and cluster ids of ``count`` kept records from
        the ``first_kept``-th on."""
        representatives = self.representative[first_kept : first_kept + count].tolist()
        keys = [self.kept_digests[rep] for rep in representatives]
        return keys, [self.kept_ids[rep] for rep in representatives]

    def identity_report(self) -> dict | None:
        """Maximum test-vs-train identity (MMseqs2 easy-search), if asked for."""
        if self.identity_fasta is None:
            return None
        for handle in self.identity_fasta.values():
            handle.close()
        directory = self.work / "identity"
        cfg = self.settings
        return mmseqs.max_identity(
            directory / "test.fasta",
            directory / "train.fasta",
            directory / "search",
            coverage=cfg["coverage"],
            cov_mode=cfg["cov_mode"],
            min_seq_id=cfg["min_seq_id"],
            sensitivity=cfg["search_sensitivity"],
            threads=self.threads,
            mmseqs=cfg["mmseqs"],
        )

    def summary(self, identity: dict | None) -> dict:
        """The ``clustering`` entry of stats.json."""
        clusters = int(np.unique(self.representative).size)
        out = {"clusters": clusters, "sequences": int(self.representative.size)}
        if identity is not None:
            out["test_vs_train"] = identity
        return out
