"""Zero-shot variant-effect evaluation on the 16 ProteinGym DMS sets of ``shared/data/variants``.

Scores every variant with ESM-1v masked marginals (or ``--method wt_marginal|pll``) from the
given checkpoint, a random-init encoder of the same shape and, with ``--esm2``, an ESM-2
checkpoint; BLOSUM62 is the non-neural baseline. Writes ``metrics.json`` (per set, per protein,
mean over proteins; exact command, date, device, versions) and the PNGs to ``--output``
(default ``experiments/results/variants/``) and prints the markdown table.

    nice .venv/bin/python -P experiments/benchmarks/variants_zero_shot.py --random-tiny
    nice .venv/bin/python -P experiments/benchmarks/variants_zero_shot.py \\
        --checkpoint demo_output/train/checkpoints/last.ckpt --subset fast
    .venv/bin/python -P experiments/benchmarks/variants_zero_shot.py --checkpoint run/last.ckpt \\
        --esm2 esm2_t6_8M_UR50D.pt --device cuda

``--random-tiny`` evaluates a randomly initialised ``conf/model/tiny.yaml`` encoder (seeded with
``--seed + 1``, so it differs from the random-init column, which uses ``--seed``): a check of the
pipeline whose Spearman should be near 0, next to BLOSUM62's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "experiments" / "results" / "variants"


def _data_dir(value: str | None) -> Path:
    if value:
        return Path(value)
    if os.environ.get("WENSU_DATA"):  # benchmarks: WENSU_DATA=../shared/data
        return Path(os.environ["WENSU_DATA"])
    return REPO.parent / "shared" / "data"


def _random_tiny(seed: int):
    from omegaconf import OmegaConf

    from wensu.alphabet import get_alphabet
    from wensu.model import Encoder, EncoderConfig

    config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml"))
    torch.manual_seed(seed)
    return Encoder(EncoderConfig.from_dict(config)).eval(), get_alphabet(), None


def _checkpoint(path: str):
    from wensu.checkpoint import load
    from wensu.embed.model import trained_context

    encoder, alphabet = load(path)
    return encoder, alphabet, trained_context(Path(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="wensu checkpoint or ESM-2 file/folder to evaluate")
    source.add_argument("--random-tiny", action="store_true", help="random-init tiny encoder")
    parser.add_argument("--esm2", help="ESM-2 checkpoint scored as an extra baseline column")
    parser.add_argument("--subset", choices=("fast", "full"), default="fast")
    parser.add_argument("--sets", nargs="+", help="set names (default: all of sets.csv)")
    parser.add_argument("--method", choices=("masked_marginal", "wt_marginal", "pll"))
    parser.add_argument("--max-variants", type=int, help="per set (overrides the subset's cap)")
    parser.add_argument("--window", type=int, help="context in residues (default: trained, 1022)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", help="shared data root (default: ../shared/data)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from wensu.probes.variants.data import VariantDataError
    from wensu.probes.variants.run import run_variants_probe

    try:
        if args.random_tiny:
            model, alphabet, context = _random_tiny(args.seed + 1)
        else:
            model, alphabet, context = _checkpoint(args.checkpoint)
        references = {}
        if args.esm2:
            references[f"ESM-2 ({Path(args.esm2).name})"] = _checkpoint(args.esm2)[0]
        settings = {}
        if args.method:
            settings["method"] = args.method
        if args.max_variants:
            settings["max_variants"] = args.max_variants
        if args.window is not None or context:
            settings["window"] = args.window if args.window is not None else context
        run_info = {
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": args.device,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "model_source": "random-init tiny (conf/model/tiny.yaml)"
            if args.random_tiny
            else str(args.checkpoint),
            "esm2": args.esm2,
        }
        if args.device.startswith("cuda") and torch.cuda.is_available():
            run_info["gpu"] = torch.cuda.get_device_name()
        metrics = run_variants_probe(
            model,
            alphabet,
            data_dir=_data_dir(args.data_dir),
            output_dir=args.output,
            sets=args.sets,
            subset=args.subset,
            seed=args.seed,
            settings=settings,
            reference_models=references,
            device=args.device,
            show_progress=args.progress,
            run_info=run_info,
        )
    except (VariantDataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(metrics["table_markdown"])
    print(
        f"\n{metrics['seconds']:.1f} s; wrote {args.output / 'metrics.json'} and "
        f"{', '.join(metrics['figures'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
