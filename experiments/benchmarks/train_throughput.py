"""Training-step throughput: wensu vs Hugging Face ``EsmForMaskedLM`` (same 8M config, same batch).

One run measures, for each shape (default L=256 B=8 and L=1024 B=2):

* tokens/s of a full training step (masking, forward, masked-LM loss, backward, AdamW step) of
  the wensu encoder (SDPA dense attention, loss head on masked positions only, fused AdamW)
  and of ``transformers.EsmForMaskedLM`` (random init, ``attn_implementation="sdpa"``, the same
  masked inputs and labels, ``torch.optim.AdamW`` defaults as in a plain PyTorch loop);
* forward+backward alone (optimizer excluded) for both, to show where the difference comes from;
* peak memory (CPU: peak RSS growth of a fresh process per measurement; CUDA: max allocated);
* data-loader throughput (``ProteinDataModule`` train loader, one process) against the
  training step's consumption at the longest shape;
* real length distribution (``--real-proteins``): proteins drawn from the shared UniProt
  proteomes (cropped to 1,022 residues as ESM-2 trains), batched under one token budget per
  step (``--token-budget`` padded tokens) two ways: wensu's ``TokenBudgetBatchSampler``
  (length-sorted batches, padding only to the batch's own longest) and the plain padded loader
  an ``EsmForMaskedLM`` loop uses (proteins in random order, padded to the longest of the batch).
  Both sides train on the same proteins, alternating batch by batch; the figure is real
  (non-pad) tokens per second.

Timing runs both implementations in one spawned process per shape, alternating step by step so
both see the same machine load (the CPU may be shared); medians are reported. Memory is taken
from a fresh process per implementation.

    nice python experiments/benchmarks/train_throughput.py                  # CPU
    python experiments/benchmarks/train_throughput.py --device cuda         # GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ESM2_8M = {"num_layers": 6, "d_model": 320, "num_heads": 20, "ffn_dim": 1280}
RESULTS = Path(__file__).resolve().parents[1] / "results"


def real_batch(length: int, batch: int, seed: int = 0) -> np.ndarray:
    """[batch, length] tokens: crops of real E. coli proteins (embedded sample), no padding."""
    from wensu.alphabet import get_alphabet
    from wensu.data.fasta import read_fasta
    from wensu.resources import default_fasta

    alphabet = get_alphabet()
    rng = np.random.default_rng(seed)
    rows = []
    for record in read_fasta(default_fasta()):
        if len(record.sequence) >= length - 2:
            start = int(rng.integers(0, len(record.sequence) - (length - 2) + 1))
            body = record.sequence[start : start + length - 2].decode()
            rows.append(alphabet.encode(body))
            if len(rows) == batch:
                break
    return np.stack(rows)


PROTEOMES = "sequences/uniprot_proteomes"
MAX_RESIDUES = 1022  # ESM-2's training crop (1,024 tokens with <cls> and <eos>)
MACHINE_LOAD_NOTE = (
    "shared machine: 2 CPU cores used by ~7 concurrent jobs while this ran; absolute rates are "
    "low and noisy, ratios come from steps alternating in one process"
)


def real_proteins(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` token rows (<cls> seq <eos>) of proteins drawn from the shared proteomes."""
    import os

    from wensu.alphabet import get_alphabet
    from wensu.data.fasta import read_fasta

    root = Path(os.environ.get("WENSU_SHARED_DATA", "/work/shared/data")) / PROTEOMES
    alphabet = get_alphabet()
    sequences = [r.sequence for path in sorted(root.glob("*.fasta.gz")) for r in read_fasta(path)]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(sequences), size=count, replace=False)
    rows = []
    for index in chosen:
        body = sequences[index][:MAX_RESIDUES].decode()
        rows.append(np.asarray(alphabet.encode(body), dtype=np.int64))
    return rows


def padded_batches(rows: list[np.ndarray], order: list[list[int]]) -> list[np.ndarray]:
    """Each batch of row indices as one array padded (token 1) to its longest row."""
    batches = []
    for indices in order:
        longest = max(len(rows[i]) for i in indices)
        batch = np.ones((len(indices), longest), dtype=np.int64)
        for slot, i in enumerate(indices):
            batch[slot, : len(rows[i])] = rows[i]
        batches.append(batch)
    return batches


def random_order_batches(lengths: list[int], budget: int, seed: int) -> list[list[int]]:
    """Proteins in random order, cut into batches whose padded size fits ``budget``."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    batches, current, longest = [], [], 0
    for i in order.tolist():
        grown = max(longest, lengths[i])
        if current and grown * (len(current) + 1) > budget:
            batches.append(current)
            current, grown = [], lengths[i]
        current.append(i)
        longest = grown
    return batches + ([current] if current else [])


def _real_length_timing(count: int, budget: int, device_name: str, seed: int) -> dict:
    """wensu (token-budget sampler) and HF (random padded batches), alternating batches."""
    import torch
    import transformers  # noqa: F401

    from wensu.data.sampler import TokenBudgetBatchSampler

    device = torch.device(device_name)
    rows = real_proteins(count, seed)
    lengths = [len(r) for r in rows]
    plans = {
        "wensu": TokenBudgetBatchSampler([n - 2 for n in lengths], budget, seed=seed).epoch_batches(
            0
        ),
        "hf": random_order_batches(lengths, budget, seed),
    }
    plans["wensu"] = [b.tolist() for b in plans["wensu"]]
    steps = {kind: [_build_step(kind, batch, device) for batch in padded_batches(rows, plan)]
             for kind, plan in plans.items()}  # fmt: skip
    for kind in steps:  # warm-up on one batch each (not counted)
        steps[kind][0]()
    seconds = {kind: 0.0 for kind in steps}
    for index in range(max(len(s) for s in steps.values())):
        for kind, kind_steps in steps.items():
            if index < len(kind_steps):
                seconds[kind] += _timed(kind_steps[index], device)
    real = sum(lengths)
    result = {"proteins": count, "real_tokens": real, "token_budget": budget}
    for kind, plan in plans.items():
        padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
        result[kind] = {
            "batches": len(plan),
            "padded_tokens": padded,
            "padding_fraction": round(1 - real / padded, 4),
            "seconds": seconds[kind],
            "real_tokens_per_s": real / seconds[kind],
        }
    result["speedup_real_tokens_per_s"] = (
        result["wensu"]["real_tokens_per_s"] / result["hf"]["real_tokens_per_s"]
    )
    return result


def _build_step(kind: str, batch: np.ndarray, device):
    """A training-step closure (fwd, loss, bwd, AdamW) of one implementation on ``batch``."""
    import torch

    length, size = batch.shape[1], batch.shape[0]
    train_step, _ = _build(kind, length, size, device, tokens=torch.as_tensor(batch))
    return train_step


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


_MODELS: dict = {}


def _build(kind: str, length: int, batch: int, device, tokens=None):
    """(train_step, forward_backward) closures of one implementation on the shared batch.

    One model and optimizer per implementation and process: closures for several batches
    train the same model, as a training loop does.
    """
    import torch

    from wensu.alphabet import get_alphabet
    from wensu.data.masking import mask_tokens

    torch.manual_seed(0)
    if tokens is None:
        tokens = torch.as_tensor(real_batch(length, batch))
    tokens = tokens.to(device)
    generator = torch.Generator(device)
    inputs, labels = mask_tokens(tokens, get_alphabet(), generator=generator.manual_seed(0))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    if kind in ("wensu", "wensu_compiled"):
        from wensu.train.base_module import adamw
        from wensu.train.module import MaskedLMModule
        from wensu.train.settings import OptimSettings

        if kind not in _MODELS:
            compiled = kind == "wensu_compiled"  # torch.compile (inductor), as compile=true
            module = MaskedLMModule(model=ESM2_8M, compile=compiled).to(device).train()
            optimizer = adamw([{"params": list(module.parameters())}], OptimSettings(lr=1e-4))
            _MODELS[kind] = (module, optimizer)
        module, optimizer = _MODELS[kind]

        def loss_fn():
            with autocast:
                return module.masked_lm_step(tokens, generator.manual_seed(0))["loss"]
    else:
        from transformers import EsmConfig, EsmForMaskedLM

        config = EsmConfig(
            vocab_size=33, hidden_size=320, num_hidden_layers=6, num_attention_heads=20,
            intermediate_size=1280, hidden_act="gelu", position_embedding_type="rotary",
            max_position_embeddings=max(1026, length + 2), token_dropout=True,
            emb_layer_norm_before=False, pad_token_id=1, mask_token_id=32,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        if kind not in _MODELS:
            model = EsmForMaskedLM._from_config(config, attn_implementation="sdpa").to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            _MODELS[kind] = (model.train(), optimizer)
        model, optimizer = _MODELS[kind]
        attention_mask = (inputs != 1).long()

        def loss_fn():
            with autocast:
                return model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss

    def train_step():
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward_backward():
        loss_fn().backward()
        optimizer.zero_grad(set_to_none=True)

    return train_step, forward_backward


def _timed(step, device) -> float:
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def _timing(
    length: int, batch: int, device_name: str, steps: int, warmup: int, compiled: bool = False
) -> dict:
    """Both implementations (and wensu under torch.compile when ``compiled``) in one process,
    steps alternating, so all see the same load."""
    import torch
    import transformers  # noqa: F401  (imported before timing starts)

    device = torch.device(device_name)
    kinds = ("wensu", "hf", "wensu_compiled") if compiled else ("wensu", "hf")
    built = {kind: _build(kind, length, batch, device) for kind in kinds}
    warmup_seconds = {kind: 0.0 for kind in built}
    for _ in range(warmup):
        for kind, (train_step, _) in built.items():
            warmup_seconds[kind] += _timed(train_step, device)
    times = {
        f"{kind}_{phase}": [] for kind in built for phase in ("train_step", "forward_backward")
    }
    for _ in range(steps):
        for kind, (train_step, forward_backward) in built.items():
            times[f"{kind}_train_step"].append(_timed(train_step, device))
            times[f"{kind}_forward_backward"].append(_timed(forward_backward, device))
    times["warmup_seconds"] = warmup_seconds
    return times


def _memory(kind: str, length: int, batch: int, device_name: str) -> dict:
    """Peak memory of two training steps of one implementation in a fresh process (MiB)."""
    import torch
    import transformers  # noqa: F401  (same imports on both sides: same baseline RSS)

    device = torch.device(device_name)
    train_step, _ = _build(kind, length, batch, device)
    built_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        train_step()
    _sync(device)
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak, "peak_growth_mib": peak - built_rss}


def _child(queue, function, *args):
    queue.put(function(*args))


def run_isolated(function, *args):
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, *args))
    process.start()
    result = queue.get()
    process.join()
    return result


def loader_throughput(length: int, max_tokens: int, batches: int) -> dict:
    """Tokens/s of the training DataLoader (crop ``length``, one process) on a temp dataset."""
    from wensu.data.fasta import read_fasta
    from wensu.data.shards import shard_name, write_manifest, write_shard
    from wensu.resources import default_fasta
    from wensu.train.datamodule import ProteinDataModule

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        records = list(read_fasta(default_fasta()))
        splits = {}
        for split, chosen in (("train", records[:-200]), ("valid", records[-200:])):
            entry = write_shard(
                directory / split / shard_name(0),
                [r.id for r in chosen],
                [r.sequence for r in chosen],
            )
            splits[split] = {"records": len(chosen), "shards": [entry]}
        write_manifest(directory, {"format_version": 1, "kind": "proteins", "splits": splits})
        module = ProteinDataModule(directory, max_tokens=max_tokens, crop_length=length)
        module.setup("fit")
        loader = module.train_dataloader()
        tokens, count = 0, 0
        start = time.perf_counter()
        for epoch in range(100):
            loader.batch_sampler.set_epoch(epoch)
            for batch in loader:
                tokens += batch["num_tokens"]
                count += 1
                if count == batches:
                    break
            if count == batches:
                break
        elapsed = time.perf_counter() - start
    rate = tokens / elapsed
    return {"batches": count, "tokens": tokens, "seconds": elapsed, "tokens_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="256x8,1024x2", help="LxB,LxB,...")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--real-proteins", type=int, default=0, help="0: skip real lengths")
    parser.add_argument("--token-budget", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="also time wensu under torch.compile (inductor)"
    )
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    real_lengths = None
    if args.real_proteins:
        real_lengths = run_isolated(
            _real_length_timing, args.real_proteins, args.token_budget, args.device, 0
        )
        print(json.dumps(real_lengths, indent=1), flush=True)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    results = []
    for length, batch in shapes:
        times = run_isolated(
            _timing, length, batch, args.device, args.steps, args.warmup, args.compile
        )
        entry = {"length": length, "batch": batch, "tokens_per_step": length * batch}
        entry["warmup_seconds"] = times.pop("warmup_seconds")
        for key, values in times.items():
            median = statistics.median(values)
            entry[f"{key}_s"] = median
            entry[f"{key}_tokens_per_s"] = length * batch / median
        for kind in ("wensu", "hf"):
            memory = run_isolated(_memory, kind, length, batch, args.device)
            entry.update({f"{kind}_{k}": v for k, v in memory.items()})
        for phase in ("train_step", "forward_backward"):
            entry[f"speedup_{phase}"] = entry[f"hf_{phase}_s"] / entry[f"wensu_{phase}_s"]
        entry["memory_ratio_hf_over_wensu"] = entry["hf_peak_mib"] / entry["wensu_peak_mib"]
        if args.compile:
            for phase in ("train_step", "forward_backward"):
                entry[f"speedup_compiled_{phase}"] = (
                    entry[f"hf_{phase}_s"] / entry[f"wensu_compiled_{phase}_s"]
                )
            entry["compiled_over_eager_train_step"] = (
                entry["wensu_train_step_s"] / entry["wensu_compiled_train_step_s"]
            )
        results.append(entry)
        print(json.dumps(entry, indent=1), flush=True)

    loader = None
    if shapes:
        longest = max(shapes)
        loader = loader_throughput(longest[0], longest[0] * longest[1], batches=200)
        consumption = next(r for r in results if r["length"] == longest[0])
        loader["training_tokens_per_s"] = consumption["wensu_train_step_tokens_per_s"]
        loader["ratio_loader_over_training"] = (
            loader["tokens_per_s"] / loader["training_tokens_per_s"]
        )

    payload = {
        "benchmark": "train_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "machine_load": MACHINE_LOAD_NOTE if args.device == "cpu" else None,
        "precision": "bf16 autocast" if args.device.startswith("cuda") else "float32",
        "model": {"config": ESM2_8M, "name": "ESM-2 8M architecture, random init"},
        "hf_side": "EsmForMaskedLM, attn_implementation=sdpa, torch.optim.AdamW defaults",
        "wensu_side": "MaskedLMModule.masked_lm_step, dense SDPA, fused AdamW",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": platform.platform(),
        },
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "results": results,
        "real_length_distribution": real_lengths,
        "goals": {
            "real_lengths_at_least_1_5x": None if real_lengths is None
            else real_lengths["speedup_real_tokens_per_s"] >= 1.5,
            "fixed_lengths_at_least_1_2x": {
                str(r["length"]): r["speedup_train_step"] >= 1.2 for r in results
            },
        },
        "torch_compile_cpu": {
            str(r["length"]): {
                "compiled_over_eager_train_step": r["compiled_over_eager_train_step"],
                "speedup_compiled_over_hf_train_step": r["speedup_compiled_train_step"],
                "warmup_seconds_compiled_vs_eager": [
                    r["warmup_seconds"]["wensu_compiled"], r["warmup_seconds"]["wensu"]
                ],
            }
            for r in results
        } if args.compile else "not run (pass --compile)",
        "data_loader": loader,
    }  # fmt: skip
    output = args.output or RESULTS / f"train_throughput_{args.device.split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
