"""``wensu-embed``: the Hydra app over ``conf/embed.yaml``; its keys are the fields of
:class:`~wensu.embed.settings.EmbedSettings` plus ``checkpoint``, ``input`` and ``output``."""

from __future__ import annotations

import sys
from typing import Any

from wensu.embed.api import EmbedSummary, embed
from wensu.embed.settings import EmbedError, EmbedSettings
from wensu.embed.worker import WorkerError
from wensu.hydra_app import exit_on_user_error, run_app


def _run_from_config(cfg: Any) -> EmbedSummary:
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for key in ("checkpoint", "input", "output"):
        if options.get(key) in (None, ""):
            raise EmbedError(
                f"missing {key}=... (e.g. wensu-embed checkpoint=model.ckpt "
                "input=proteins.fasta output=emb.h5)"
            )
    settings = EmbedSettings.from_options(options)
    return embed(options["checkpoint"], options["input"], options["output"], settings)


def _hydra_task(cfg: Any) -> None:
    try:
        with exit_on_user_error():
            summary = _run_from_config(cfg)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wensu-embed: {summary.written} embedded ({summary.residues:,} residues), "
        f"{summary.skipped} already done, {summary.quarantined} quarantined, "
        f"{summary.duplicates} duplicates dropped; {summary.total} in {summary.output} "
        f"({summary.seconds:.1f} s)",
        file=sys.stderr,
    )


def main() -> None:
    """Console script ``wensu-embed`` (Hydra app over ``conf/embed.yaml``)."""
    run_app(_hydra_task, "embed")


if __name__ == "__main__":
    main()
