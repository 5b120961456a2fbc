"""Cells preprocessing as a Hydra app (``conf/preprocess_cells.yaml``).

    wensu-preprocess data=cells input=[/data/singlecell] output=cells
    wensu-preprocess data=cells input=[a.h5ad,b.h5ad] holdout.datasets=[b] \\
        binning.token_order=rank binning.max_genes=2048
    wensu-preprocess data=cells --cfg job     # print the resolved settings
    python -m wensu.preprocessing.cells.cli ...   # the same app

Errors in inputs or settings end with one line naming the file/setting (exit status 2), not a
traceback; an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import json
import logging
import sys

import hydra
from omegaconf import DictConfig

PROG = "wensu-preprocess data=cells"


@hydra.main(version_base="1.3", config_path="pkg://wensu.conf", config_name="preprocess_cells")
def _app(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from .pipeline import run_cells

    try:
        summary = run_cells(cfg)
    except ValueError as err:  # PreprocessError, H5adError, VocabError, ...: all name the cause
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    counts = summary["counts"]
    print(
        f"{PROG}: {counts['written']} of {counts['read']} cells written "
        f"(train {summary['splits']['train']}, valid {summary['splits']['valid']}, "
        f"test {summary['splits']['test']}); duplicates {counts['duplicates']}, "
        f"filtered {counts['filtered']}, quarantined {counts['quarantined']}; "
        f"vocabulary {summary['vocab_size']} tokens -> {summary['manifest']}",
        file=sys.stderr,
    )
    if summary["already_complete"]:
        print(f"{PROG}: output was already complete; nothing to do", file=sys.stderr)
    print(json.dumps(summary["counts"], sort_keys=True))


def main() -> None:
    """Entry point (``wensu-preprocess data=cells`` routes here)."""
    _app()


if __name__ == "__main__":
    main()
