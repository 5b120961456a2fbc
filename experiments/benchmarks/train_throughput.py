"""Training-step throughput: wensu vs Hugging Face ``EsmForMaskedLM`` (same 8M config, same batch).

One run measures, for each shape (default L=256 B=8 and L=1024 B=2):

* tokens/s of a full training step (masking, forward, masked-LM loss, backward, AdamW step) of
  the wensu encoder (SDPA dense attention, loss head on masked positions only, fused AdamW)
  and of ``transformers.EsmForMaskedLM`` (random init, ``attn_implementation="sdpa"``, the same
  masked inputs and labels, ``torch.optim.AdamW`` defaults as in a plain PyTorch loop);
* forward+backward alone (optimizer excluded) for both, to show where the difference comes from;
* peak memory (CPU: peak RSS growth of a fresh process per measurement; CUDA: max allocated);
* data-loader throughput (``ProteinDataModule`` train loader, one process) against the
  training step's consumption at the longest shape.

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


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _build(kind: str, length: int, batch: int, device):
    """(train_step, forward_backward) closures of one implementation on the shared batch."""
    import torch

    from wensu.alphabet import get_alphabet
    from wensu.data.masking import mask_tokens

    torch.manual_seed(0)
    tokens = torch.as_tensor(real_batch(length, batch)).to(device)
    generator = torch.Generator(device)
    inputs, labels = mask_tokens(tokens, get_alphabet(), generator=generator.manual_seed(0))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    if kind == "wensu":
        from wensu.train.module import MaskedLMModule, _adamw
        from wensu.train.settings import OptimSettings

        module = MaskedLMModule(model=ESM2_8M).to(device).train()
        optimizer = _adamw([{"params": list(module.parameters())}], OptimSettings(lr=1e-4))

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
        model = EsmForMaskedLM._from_config(config, attn_implementation="sdpa").to(device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
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


def _timing(length: int, batch: int, device_name: str, steps: int, warmup: int) -> dict:
    """Both implementations in one process, steps alternating, so both see the same load."""
    import torch
    import transformers  # noqa: F401  (imported before timing starts)

    device = torch.device(device_name)
    built = {kind: _build(kind, length, batch, device) for kind in ("wensu", "hf")}
    for _ in range(warmup):
        for train_step, _ in built.values():
            train_step()
    times = {
        f"{kind}_{phase}": [] for kind in built for phase in ("train_step", "forward_backward")
    }
    for _ in range(steps):
        for kind, (train_step, forward_backward) in built.items():
            times[f"{kind}_train_step"].append(_timed(train_step, device))
            times[f"{kind}_forward_backward"].append(_timed(forward_backward, device))
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
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import torch
    import transformers

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    results = []
    for length, batch in shapes:
        times = run_isolated(_timing, length, batch, args.device, args.steps, args.warmup)
        entry = {"length": length, "batch": batch, "tokens_per_step": length * batch}
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
        results.append(entry)
        print(json.dumps(entry, indent=1), flush=True)

    longest = max(shapes)
    loader = loader_throughput(longest[0], longest[0] * longest[1], batches=200)
    consumption = next(r for r in results if r["length"] == longest[0])
    loader["training_tokens_per_s"] = consumption["wensu_train_step_tokens_per_s"]
    loader["ratio_loader_over_training"] = loader["tokens_per_s"] / loader["training_tokens_per_s"]

    payload = {
        "benchmark": "train_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
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
        "data_loader": loader,
    }  # fmt: skip
    output = args.output or RESULTS / f"train_throughput_{args.device.split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
