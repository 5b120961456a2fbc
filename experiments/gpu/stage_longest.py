"""Stage c: the longest esm2_150m training step that fits, with and without checkpointing.

One training step on a single sequence of L tokens (``MaskedLMModule.masked_lm_step``: masking,
forward, masked-LM loss, backward, fused AdamW step), bf16 autocast, windowed attention (flex on
CUDA, window 256 + 1 global token). L doubles from 16,384 until the step runs out of memory, its
predicted time passes ``max_step_s``, or the stage's time share is spent; then again with
``activation_checkpointing: true`` when the model config has that field (else recorded as not
available).
"""

from __future__ import annotations

import dataclasses
import time

from common import (
    Deadline,
    StageRecord,
    autocast,
    compile_lengths_dynamically,
    device_of,
    error_text,
    free_memory,
    gib,
    is_out_of_memory,
    model_config,
    peak_memory,
    pyplot,
    save_figure,
    synchronize,
)


def checkpointing_available() -> bool:
    from wensu.model import EncoderConfig

    return "activation_checkpointing" in {f.name for f in dataclasses.fields(EncoderConfig)}


def one_step(module, optimizer, length: int, device) -> float:
    import torch

    tokens = torch.randint(4, 24, (1, length), device=device)
    tokens[0, 0], tokens[0, -1] = 0, 2  # <cls> ... <eos>
    generator = torch.Generator(device).manual_seed(length)
    synchronize(device)
    start = time.perf_counter()
    with autocast(device):
        loss = module.masked_lm_step(tokens, generator)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


def search(spec: dict, checkpointing: bool, deadline: Deadline, device) -> dict:
    """Doubling search; rows per length and the longest that trained."""
    import torch

    from wensu.train.module import MaskedLMModule

    attention = {"backend": spec["backend"], "window": spec["window"],
                 "num_global": spec["num_global"], "block_size": 128}  # fmt: skip
    extra = {"activation_checkpointing": True} if checkpointing else {}
    cfg = model_config(spec["model"], spec["dry_run"], attention=attention, **extra)
    module = MaskedLMModule(model=cfg).to(device).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    one_step(module, optimizer, 256, device)  # warm-up: kernels, optimizer state, flex compile
    rows, longest, last_seconds = [], None, None
    length, stopped = spec["start"], f"reached max_length {spec['max_length']}"
    while length <= spec["max_length"]:
        guess = None if last_seconds is None else 2.2 * last_seconds
        if guess is not None and guess > spec["max_step_s"]:
            stopped = f"next step predicted {guess:.0f} s > max_step_s {spec['max_step_s']}"
            break
        if not deadline.allows(guess or 2.0):
            stopped = "time share spent"
            break
        try:
            with peak_memory(device) as memory:
                seconds = one_step(module, optimizer, length, device)
        except Exception as error:  # noqa: BLE001 - the outcome of this length
            optimizer.zero_grad(set_to_none=True)
            free_memory(device)
            if not is_out_of_memory(error):
                raise
            rows.append({"tokens": length, "status": "oom", "detail": error_text(error, 200)})
            stopped = f"out of memory at {length} tokens"
            break
        rows.append({"tokens": length, "status": "ok", "seconds": seconds,
                     "peak_gib": gib(memory["peak_bytes"]),
                     "kib_per_token": memory["peak_bytes"] / 1024 / length})  # fmt: skip
        longest, last_seconds = length, seconds
        length *= 2
    del module, optimizer
    free_memory(device)
    return {"rows": rows, "longest_tokens": longest, "stopped_because": stopped}


def plot(runs: dict, path) -> str:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, result in runs.items():
        ok = [r for r in result.get("rows", []) if r["status"] == "ok"]
        if ok:
            axis.plot([r["tokens"] for r in ok], [r["peak_gib"] for r in ok], "o-", label=name)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("tokens in one training step")
    axis.set_ylabel("peak GiB")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def run(spec: dict, record: StageRecord) -> None:
    device = device_of(spec)
    deadline = Deadline(spec["time_budget_s"])
    compile_lengths_dynamically(device)
    record.update(
        setup={k: spec[k] for k in ("model", "backend", "window", "num_global", "start")}
        | {"step": "masked_lm_step + backward + fused AdamW, batch 1, bf16 autocast on CUDA"},
        runs={},
        longest={},
    )
    available = checkpointing_available()
    for index, checkpointing in enumerate((False, True)):
        name = "with_checkpointing" if checkpointing else "without_checkpointing"
        if checkpointing and not available:
            record["runs"][name] = {
                "status": "not available",
                "detail": "EncoderConfig has no activation_checkpointing",
            }
            record["longest"][name] = "not available"
            continue
        share = Deadline(deadline.left() / (2 - index))
        try:
            result = search(spec, checkpointing, share, device)
        except Exception as error:  # noqa: BLE001
            result = {"status": "error", "detail": error_text(error)}
        record["runs"][name] = result
        record["longest"][name] = result.get("longest_tokens")
        record.flush()
    record["figure"] = plot(record["runs"], spec["figure_dir"] / "longest_context.png")
