"""``wensu-preprocess``: the Hydra app around :func:`wensu.preprocessing.run_preprocess`.

    wensu-preprocess input=[a.fasta.gz,dir/] output=out num_workers=2 max_length=1022 \\
        long_policy=split cluster.enabled=true
    wensu-preprocess --cfg job        # print the resolved settings
    wensu-preprocess data=cells input=[data/singlecell] output=cells   # .h5ad -> cell shards

``data=proteins`` (the default) runs the FASTA pipeline (conf/preprocess.yaml); ``data=cells`` runs
the single-cell pipeline (conf/preprocess_cells.yaml, :mod:`wensu.preprocessing.cells`).

Errors in inputs or settings end with one line naming the file/setting (exit status 2), not a
traceback; an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from .config import load_config
from .errors import PreprocessError


@hydra.main(version_base="1.3", config_path="pkg://wensu.conf", config_name="preprocess")
def _app(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(cfg)  # settings errors surface before the heavy imports
        from .pipeline import run_preprocess

        run_preprocess(config, show_summary=True)
    except PreprocessError as err:
        print(f"wensu-preprocess: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # e.g. output= names a file: one line, not a traceback
        where = err.filename or cfg.get("output")
        cause = f"{where}: {err.strerror or err} (output= must be a writable directory)"
        print(f"wensu-preprocess: error: {cause}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("wensu-preprocess: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


DATA_KINDS = ("proteins", "cells")


def split_data_kind(argv: list[str]) -> tuple[str, list[str]]:
    """The ``data=<kind>`` choice (default proteins) and the remaining arguments."""
    kind, rest = "proteins", []
    for arg in argv:
        if arg.startswith("data="):
            kind = arg.removeprefix("data=")
        else:
            rest.append(arg)
    if kind not in DATA_KINDS:
        raise PreprocessError(f"data={kind}: choose one of {', '.join(DATA_KINDS)}")
    return kind, rest


def main() -> None:
    """Console-script entry point: ``data=cells`` routes to the single-cell pipeline."""
    try:
        kind, rest = split_data_kind(sys.argv[1:])
    except PreprocessError as err:
        print(f"wensu-preprocess: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = rest
    if kind == "cells":
        from .cells.cli import main as cells_main

        cells_main()
    else:
        _app()


if __name__ == "__main__":
    main()
