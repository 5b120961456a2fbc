"""The main job on the embedded default sample: preprocess → train → embed → evaluate.

``make demo`` runs ``python -m wensu.demo``. Each step is the console script a user would call, so
the demo exercises exactly the commands the README documents; every step resumes when rerun.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from wensu.resources import default_fasta


def _script(name: str) -> str:
    """Console script installed beside this interpreter (falls back to PATH)."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def _run(step: str, argv: list[str]) -> float:
    print(f"\n=== {step}: {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(argv, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo: step '{step}' failed with exit code {completed.returncode}")
    elapsed = time.perf_counter() - start
    print(f"=== {step} done in {elapsed:.1f} s", flush=True)
    return elapsed


def write_head(fasta: Path, destination: Path, records: int) -> Path:
    """Copy the first ``records`` FASTA records (a quick embedding input for the demo)."""
    opener = gzip.open if fasta.suffix == ".gz" else open
    seen = 0
    with opener(fasta, "rt") as source, open(destination, "w") as sink:
        for line in source:
            if line.startswith(">"):
                seen += 1
                if seen > records:
                    break
            sink.write(line)
    return destination


# --quick: the same four commands at smoke-test size (what `make test` runs from a bare folder).
QUICK_TRAIN = ["trainer.max_steps=20", "trainer.val_check_interval=10"]
QUICK_EVAL = [
    "probe=[ss,contacts]",
    "probe.ss.fast.max_train=40",
    "probe.ss.fast.max_valid=10",
    "probe.ss.fast.training.max_epochs=3",
]


def build_steps(
    output: Path, fasta: Path, embed_records: int | None, quick: bool = False
) -> list[tuple[str, list[str]]]:
    """The demo's commands, in order."""
    data_dir = output / "dataset"
    embed_input = (
        write_head(fasta, output / "embed_input.fasta", embed_records) if embed_records else fasta
    )
    run_dir = output / "train"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    return [
        (
            "preprocess",
            [_script("wensu-preprocess"), f"input=[{fasta}]", f"output={data_dir}"],
        ),
        (
            "train",
            [
                _script("wensu-train"),
                "experiment=quickstart",
                f"data.dataset_dir={data_dir}",
                f"hydra.run.dir={run_dir}",
                *(QUICK_TRAIN if quick else []),
            ],
        ),
        (
            "embed",
            [
                _script("wensu-embed"),
                f"checkpoint={checkpoint}",
                f"input={embed_input}",
                f"output={output / 'embeddings.h5'}",
            ],
        ),
        (
            "evaluate",
            [
                _script("wensu-eval"),
                f"checkpoint={checkpoint}",
                "subset=fast",
                f"output={output / 'report'}",
                *(QUICK_EVAL if quick else []),
            ],
        ),
    ]


def _print_summary(output: Path, timings: dict[str, float]) -> None:
    print("\n=== wensu demo summary")
    summary_path = output / "train" / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        ppl = summary.get("val_perplexity")
        unigram = summary.get("unigram_baseline_perplexity")
        if ppl is not None and unigram is not None:
            print(f"validation perplexity {ppl:.3f} vs unigram baseline {unigram:.3f}")
    loss_curve = output / "train" / "loss_curve.png"
    if loss_curve.exists():
        print(f"loss curve:    {loss_curve}")
    print(f"run directory: {output / 'train'}")
    print(f"embeddings:    {output / 'embeddings.h5'}")
    report = output / "report" / "report.md"
    sample = report.exists() and "embedded evaluation sample" in report.read_text()
    note = " (embedded evaluation sample; `wensu-data fetch` for full sets)" if sample else ""
    print(f"report:        {report}{note}")
    print("timings (s):   " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


def main(argv: list[str] | None = None) -> None:
    """Run the demo pipeline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--input", type=Path, default=None, help="FASTA (default: embedded sample)")
    parser.add_argument(
        "--embed-records",
        type=int,
        default=None,
        help="embed only the first N records of the input (default: all of them)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test size: few steps, 50 proteins, SS+contacts"
    )
    args = parser.parse_args(argv)
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    fasta = (args.input or default_fasta()).resolve()
    embed_records = args.embed_records or (50 if args.quick else None)
    steps = build_steps(output, fasta, embed_records, quick=args.quick)
    timings = {step: _run(step, cmd) for step, cmd in steps}
    _print_summary(output, timings)


if __name__ == "__main__":
    main()
