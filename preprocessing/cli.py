"""``wensu-preprocess``: the Hydra app around :func:`wensu.preprocessing.run_preprocess`.

    wensu-preprocess input=[a.fasta.gz,dir/] output=out num_workers=2 max_length=1022 \\
        long_policy=split cluster.enabled=true
    wensu-preprocess --cfg job        # print the resolved settings

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
    except KeyboardInterrupt:
        print("wensu-preprocess: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Console-script entry point."""
    _app()


if __name__ == "__main__":
    main()
