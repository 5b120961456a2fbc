"""Rebuild the small real .h5ad cuts in this folder from the shared PBMC files.

    python tests/data/cells/make_cuts.py [/path/to/shared/data]

Deterministic (fixed seed): the same inputs give the same cells and genes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np

HERE = Path(__file__).resolve().parent


def _cut(source: Path, target: Path, per_class: int, donors: int | None, genes: int | None):
    adata = ad.read_h5ad(source)
    rng = np.random.default_rng(0)
    keep = np.ones(adata.n_obs, dtype=bool)
    if donors is not None:
        chosen = sorted(adata.obs["donor_id"].astype(str).unique())[:donors]
        keep &= adata.obs["donor_id"].astype(str).isin(chosen).to_numpy()
    rows = []
    labels = adata.obs["cell_type_coarse"].astype(str).to_numpy()
    for label in sorted(set(labels[keep])):
        members = np.flatnonzero(keep & (labels == label))
        rows += sorted(rng.choice(members, size=min(per_class, members.size), replace=False))
    cut = adata[np.sort(rows)].copy()
    if genes is not None:  # the most expressed genes of the cut (keeps the markers)
        totals = np.asarray(cut.X.sum(axis=0)).ravel()
        cut = cut[:, np.sort(np.argsort(-totals, kind="stable")[:genes])].copy()
    cut.obsm.clear()
    cut.uns["description"] = f"cut of {source.name} by tests/data/cells/make_cuts.py"
    cut.write_h5ad(target, compression="gzip")
    print(target.name, cut.shape, target.stat().st_size)


def main() -> None:
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "data")
    cells = shared / "singlecell"
    _cut(cells / "kang2018_ifnb_ctrl_muscat_12261.h5ad", HERE / "kang_ctrl_cut.h5ad", 40, 3, None)
    _cut(cells / "pbmc3k_seurat_annotated.h5ad", HERE / "pbmc3k_cut.h5ad", 30, None, 3000)


if __name__ == "__main__":
    main()
