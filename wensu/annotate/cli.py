"""``wensu-annotate``: the Hydra app over ``conf/annotate.yaml`` (see :mod:`wensu.annotate.run`).

Bad input (a file that is not usable, too few shared genes, a checkpoint that is not a cell-type
classifier) prints one line ``error: <message>`` on stderr and exits with status 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_USAGE = 2
KEYS = (
    "checkpoint", "input", "output", "gene_column", "values", "matrix", "min_genes",
    "min_confidence", "label_column", "plot", "overwrite", "threads", "max_tokens",
)  # fmt: skip


def _hydra_task(cfg: Any) -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    # torch and anndata load only once a run starts: --help stays instant.
    from wensu.annotate.run import AnnotateError, annotate

    try:
        options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        unknown = sorted(set(options) - set(KEYS))
        if unknown:
            raise AnnotateError(f"unknown option {unknown[0]}; valid: {', '.join(KEYS)}")
        threads = options.pop("threads")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        report = annotate(
            options.pop("checkpoint"), options.pop("input"), options.pop("output"), **options
        )
    except MissingMandatoryValue as error:
        print(f"error: missing required option {error.full_key}=...", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except (AnnotateError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    genes = report["genes"]
    print(json.dumps(report, indent=1))
    print(
        f"wensu-annotate: {report['cells']} cells ({report['values_detected']}), "
        f"{genes['genes_mapped']} of {genes['genes_in_vocabulary']} panel genes found; "
        f"-> {report['output']}",
        file=sys.stderr,
    )
    if "panel_note" in report:
        print(f"note: {report['panel_note']}", file=sys.stderr)


def main() -> None:
    """Console script ``wensu-annotate``."""
    import hydra

    hydra.main(config_path="pkg://wensu.conf", config_name="annotate", version_base="1.3")(
        _hydra_task
    )()


if __name__ == "__main__":
    main()
