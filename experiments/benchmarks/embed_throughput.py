"""Embedding throughput: ``wensu.embed`` vs the usual Hugging Face ``EsmModel`` loop, same weights.

Both sides embed the same real proteins (the first ``--n`` E. coli K-12 proteins of at most 1,022
residues, file order) with the same weights: a random-init Hugging Face ``EsmForMaskedLM`` with
the ESM-2 8M shape, converted to a wensu ``Encoder`` by ``wensu.interop.from_hf``. The Hugging
Face side is written the way it usually is: a fixed batch size in file order, the tokenizer
padding to the longest sequence, ``output_hidden_states=True``, mean pooling over the attention
mask. The wensu side is ``wensu.embed.embed`` writing an HDF5 file (length-sorted token-budget
batches, only the requested layer, no LM head). The mean embeddings of the two are compared.

The long-sequence part embeds one sequence of real proteins concatenated (E. coli K-12's
proteome, ~1.36 M residues) in a fresh subprocess per case and reports the peak resident memory
of the embedding (``VmHWM``, reset once the model is built) next to the memory before it and
the MiB per 1,000 residues: the 8M dense model (stitched windows) at ``--dense-residues``, and
the 8M shape with windowed attention (streamed layer by layer, ``wensu.model.streaming``) at
each of ``--long-residues`` (mean and per-residue vectors written to HDF5). Before them, the
streamed pass is compared with the encoder's dense forward (same windowed pattern) at
``--equal-residues``, the longest length the dense L x L mask still fits comfortably.

    nice .venv/bin/python -P experiments/benchmarks/embed_throughput.py --parts throughput --n 250
    nice .venv/bin/python -P experiments/benchmarks/embed_throughput.py --parts long
    .venv/bin/python -P experiments/benchmarks/embed_throughput.py --device cuda --n 4000 \\
        --max-tokens 32768 --precision bf16

Results go to ``experiments/results/embed_throughput_<device>.json`` (or
``embed_long_sequence_<device>.json`` for ``--parts long``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
PROTEOMES = REPO.parent / "shared" / "data" / "sequences" / "uniprot_proteomes"
ECOLI = PROTEOMES / "UP000000625-E.coli.fasta.gz"
ESM2_8M = dict(
    vocab_size=33,
    hidden_size=320,
    num_hidden_layers=6,
    num_attention_heads=20,
    intermediate_size=1280,
    position_embedding_type="rotary",
    token_dropout=True,
    mask_token_id=32,
    pad_token_id=1,
    max_position_embeddings=1026,
    emb_layer_norm_before=False,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def read_fasta(path: Path) -> list[tuple[str, str]]:
    """(id, sequence) records, read by the same FASTA reader wensu-embed uses."""
    from wensu.data.fasta import read_fasta as stream

    return [(r.id, r.sequence.decode("ascii")) for r in stream(path, errors="skip")]


def hf_model(seed: int):
    """Random-init Hugging Face ESM-2 (8M shape) masked LM."""
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(seed)
    return EsmForMaskedLM(EsmConfig(**ESM2_8M)).eval()


def hf_tokenizer(directory: Path):
    from transformers import EsmTokenizer

    from wensu.alphabet import TOKENS

    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n")
    return EsmTokenizer(vocab_file=str(vocab))


def run_hf(
    model, tokenizer, sequences: list[str], batch_size: int, device: str, precision: str
) -> np.ndarray:
    """Mean last-layer embeddings, the usual way (fixed batches, pad to longest, all layers out)."""
    esm = model.esm.to(device)
    means = []
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast:
        for start in range(0, len(sequences), batch_size):
            batch = tokenizer(
                sequences[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=1024,
                return_tensors="pt",
            ).to(device)
            out = esm(**batch, output_hidden_states=True)
            hidden = out.hidden_states[-1]
            mask = batch["attention_mask"].clone()
            mask[:, 0] = 0  # <cls>
            mask[torch.arange(len(mask)), batch["attention_mask"].sum(1) - 1] = 0  # <eos>
            summed = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            means.append(summed.float().cpu().numpy())
    return np.concatenate(means)


def run_wensu(
    encoder, fasta: Path, output: Path, max_tokens: int, device: str, precision: str
) -> None:
    from wensu.embed import embed

    embed(
        encoder,
        fasta,
        output,
        pooling=["mean"],
        max_tokens=max_tokens,
        device=device,
        precision=precision,
        progress=False,
    )


def write_fasta(path: Path, records: list[tuple[str, str]]) -> None:
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))


# Peak RSS of the embedding alone: VmHWM is reset (clear_refs 5) once the model is built.
LONG_CHILD = r"""
import json, re, sys, time, torch
from wensu.embed import embed
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
cfg = json.loads(sys.argv[1]); fasta, out, device = sys.argv[2], sys.argv[3], sys.argv[4]
torch.manual_seed(0)
encoder = Encoder(EncoderConfig.from_dict(cfg)).eval()
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status("VmRSS")
start = time.perf_counter()
embed(encoder, fasta, out, pooling=["mean", "per_residue"], device=device, progress=False)
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({"rss_before_mib": before, "peak_rss_mib": peak,
                  "peak_minus_before_mib": peak - before, "seconds": seconds}))
"""


def long_case(name: str, config: dict, fasta: Path, workdir: Path, device: str) -> dict:
    output = workdir / f"long-{name}-{fasta.stem}.h5"
    done = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            LONG_CHILD,
            json.dumps(config),
            str(fasta),
            str(output),
            device,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    output.unlink(missing_ok=True)  # a million residues' vectors: 1.3 GB per layer
    if done.returncode != 0:
        raise RuntimeError(f"long case {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["case"] = name
    result["attention"] = config["attention"]
    return result


def throughput(args: argparse.Namespace, model, encoder, workdir: Path) -> dict:
    """Same proteins, same weights: the usual Hugging Face loop, then ``wensu.embed``."""
    from wensu.embed.batching import token_budget_batches
    from wensu.embed.file_format import load_matrix

    records = [r for r in read_fasta(ECOLI) if len(r[1]) <= 1022][: args.n]
    sequences = [seq for _, seq in records]
    residues = sum(len(s) for s in sequences)
    fasta = workdir / "subset.fasta"
    write_fasta(fasta, records)
    tokenizer = hf_tokenizer(workdir)

    run_hf(model, tokenizer, sequences[:8], 8, args.device, args.precision)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    hf_means = run_hf(model, tokenizer, sequences, args.batch_size, args.device, args.precision)
    hf_seconds, hf_cpu = time.perf_counter() - start, time.process_time() - cpu_start

    warmup = workdir / "warmup.fasta"
    write_fasta(warmup, records[:8])
    wensu_args = (args.max_tokens, args.device, args.precision)
    run_wensu(encoder, warmup, workdir / "warmup.h5", *wensu_args)
    start, cpu_start = time.perf_counter(), time.process_time()
    run_wensu(encoder, fasta, workdir / "wensu.h5", *wensu_args)
    wensu_seconds, wensu_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ids, matrix = load_matrix(workdir / "wensu.h5")
    by_id = dict(zip(ids, matrix, strict=True))
    wensu_means = np.stack([by_id[rid] for rid, _ in records])

    lengths = [len(s) for s in sequences]
    hf_padded = sum(
        len(lengths[i : i + args.batch_size]) * (max(lengths[i : i + args.batch_size]) + 2)
        for i in range(0, len(lengths), args.batch_size)
    )
    wensu_padded = sum(
        len(batch) * (max(lengths[i] for i in batch) + 2)
        for batch in token_budget_batches(lengths, args.max_tokens)
    )
    hf_rate, wensu_rate = residues / hf_seconds, residues / wensu_seconds
    return {
        "data": {"fasta": ECOLI.name, "sequences": len(sequences), "residues": residues},
        "hf": {
            "batch_size": args.batch_size,
            "padded_tokens": hf_padded,
            "seconds": hf_seconds,
            "cpu_seconds": hf_cpu,
            "residues_per_s": hf_rate,
        },
        "wensu": {
            "max_tokens": args.max_tokens,
            "padded_tokens": wensu_padded,
            "seconds": wensu_seconds,
            "cpu_seconds": wensu_cpu,
            "residues_per_s": wensu_rate,
        },
        "speedup_wensu_over_hf": wensu_rate / hf_rate,
        # On a shared CPU wall time also counts other jobs; process CPU time does not.
        "speedup_cpu_time": hf_cpu / wensu_cpu,
        "mean_embedding_max_abs_diff": float(np.abs(hf_means - wensu_means).max()),
    }


def streamed_equals_dense(encoder, sequence: str, window: int) -> dict:
    """Max |streamed - dense forward| over all layers, same weights and windowed pattern."""
    from wensu.alphabet import get_alphabet
    from wensu.embed.compute import stream_chunk
    from wensu.model import Encoder
    from wensu.model.config import EncoderConfig
    from wensu.model.streaming import stream_encode

    cfg = encoder.cfg.to_dict()
    cfg["attention"].update(window=window, backend="dense")
    windowed = Encoder(EncoderConfig.from_dict(cfg))
    windowed.load_state_dict(encoder.state_dict())
    windowed.eval()
    tokens = torch.from_numpy(get_alphabet().encode(sequence))
    layers = list(range(windowed.num_layers + 1))
    with torch.no_grad():
        dense = windowed(tokens[None], repr_layers=layers)["representations"]
        diff = {layer: 0.0 for layer in layers}

        def sink(layer, start, values):
            reference = dense[layer][0, start : start + len(values)]
            diff[layer] = max(diff[layer], float((values - reference).abs().max()))

        stream_encode(windowed, tokens, layers, sink, stream_chunk(windowed))
    return {"residues": len(sequence), "window": window, "max_abs_diff": max(diff.values())}


def long_sequence(args: argparse.Namespace, encoder, workdir: Path) -> dict:
    """Peak memory of one long sequence: dense (stitched windows) and windowed (streamed)."""
    lengths = sorted(int(n) for n in args.long_residues.split(","))
    pieces, total = [], 0
    for _, seq in read_fasta(ECOLI):
        pieces.append(seq)
        total += len(seq)
    sequence = "".join(pieces)
    if len(sequence) < lengths[-1]:
        raise SystemExit(f"the proteome has {len(sequence)} residues, fewer than {lengths[-1]}")
    dense_cfg = encoder.cfg.to_dict()
    windowed_cfg = json.loads(json.dumps(dense_cfg))
    windowed_cfg["attention"]["window"] = args.long_window
    plan = [("dense_stitched_windows", dense_cfg, args.dense_residues)]
    plan += [("windowed_streamed", windowed_cfg, length) for length in lengths]
    result = {
        "source": f"{ECOLI.name} proteins concatenated ({len(sequence)} residues)",
        "equal_to_dense": streamed_equals_dense(
            encoder, sequence[: args.equal_residues], args.long_window
        ),
        "cases": [],
    }
    for name, config, length in plan:
        fasta = workdir / f"long-{length}.fasta"
        write_fasta(fasta, [("concatenated_ecoli", sequence[:length])])
        case = long_case(name, config, fasta, workdir, args.device)
        case["mib_per_1000_residues"] = case["peak_minus_before_mib"] / length * 1000
        result["cases"].append({"residues": length, **case})
        fasta.unlink()
        print(json.dumps(result["cases"][-1]), flush=True)
    streamed = [c for c in result["cases"] if c["case"] == "windowed_streamed"]
    per_k = [c["mib_per_1000_residues"] for c in streamed]
    result["streamed_per_residue_spread"] = max(per_k) / min(per_k)
    result["streamed_peak_gib_at_longest"] = streamed[-1]["peak_rss_mib"] / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=150, help="proteins to embed")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8, help="Hugging Face batch size")
    parser.add_argument("--max-tokens", type=int, default=8192, help="wensu token budget")
    parser.add_argument(
        "--long-residues", default="100000,300000,1000000", help="windowed lengths, comma-separated"
    )
    parser.add_argument("--dense-residues", type=int, default=35_000)
    parser.add_argument("--equal-residues", type=int, default=8192)
    parser.add_argument("--long-window", type=int, default=128, help="windowed model's window")
    parser.add_argument("--parts", default="throughput,long", help="throughput and/or long")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from wensu import __version__
    from wensu.interop import from_hf

    result = {
        "benchmark": "embed_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "wensu": __version__,
        },
        "model": "ESM-2 8M shape, random init (HF EsmForMaskedLM -> wensu.interop.from_hf)",
        "precision": args.precision,
    }
    model = hf_model(seed=0)
    encoder = from_hf(model.state_dict(), model.config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "throughput" in args.parts:
            result["throughput"] = throughput(args, model, encoder, workdir)
        if "long" in args.parts:
            result["long_sequence"] = long_sequence(args, encoder, workdir)
    stem = "embed_throughput" if "throughput" in args.parts else "embed_long_sequence"
    device_kind = args.device.split(":")[0]
    output = args.output or REPO / "experiments" / "results" / f"{stem}_{device_kind}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
