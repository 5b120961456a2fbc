"""Stage a: training throughput of ESM-2 8M / 35M / 150M shapes, wensu vs Hugging Face.

Both sides train on real proteins from the carried shards (``wensu.train.datamodule``), bf16
autocast, masked-LM loss, AdamW (fused on CUDA, the same for both), one optimizer step per
batch of ``token_budget`` padded tokens. Variants per model:

* ``wensu_packed``: ``MaskedLMModule`` on packed windows (``concatenate=True``: every token is a
  residue or a separator, no padding), dense SDPA attention (ESM-2's pattern: the best backend
  at 1,024 tokens, where a window would change the model);
* ``wensu_packed_compiled``: the same with ``compile=True`` (wensu's ``torch.compile`` switch),
  run while the stage's time allows (compilation costs tens of seconds per shape);
* ``hf_packed``: ``EsmForMaskedLM`` (``attn_implementation="sdpa"``) on the same packed windows:
  the model-for-model comparison;
* ``hf_padded``: ``EsmForMaskedLM`` on real-length crops padded to the longest in each batch
  (wensu's token-budget batches): the usual way to feed it; real (non-pad) tokens/s.

Per variant: real tokens/s (median step), MFU (model FLOPs, ``common.train_flops_per_token``)
against the datasheet bf16 peak and against the bf16 matmul rate measured here, peak memory.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from common import (
    DATASHEET_BF16_TFLOPS,
    DEFAULT_BF16_TFLOPS,
    Deadline,
    StageRecord,
    autocast,
    device_of,
    error_text,
    free_memory,
    gib,
    median,
    model_config,
    peak_memory,
    pyplot,
    save_figure,
    synchronize,
    time_steps,
    train_flops_per_token,
)


def measured_matmul_tflops(device) -> float:
    """bf16 (CUDA) / float32 (CPU) rate of a large square matmul on random data, TFLOP/s."""
    import torch

    n = 8192 if device.type == "cuda" else 256
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = time_steps(lambda: a @ b, device, warmup=3, steps=10, max_seconds=5.0)
    return 2 * n**3 / median(times) / 1e12


def device_name(device) -> str:
    import platform

    import torch

    if device.type != "cuda":
        return platform.processor() or platform.machine()
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"


def peak_tflops(device) -> tuple[float, str]:
    """The datasheet dense bf16 peak used for MFU and where it comes from."""
    import torch

    if device.type != "cuda":
        return DEFAULT_BF16_TFLOPS, "H200 datasheet value (CPU dry run: MFU is not meaningful)"
    name = torch.cuda.get_device_name(device)
    for key, value in DATASHEET_BF16_TFLOPS.items():
        if key in name:
            return value, f"NVIDIA {key} SXM datasheet, dense bf16 (no sparsity)"
    return DEFAULT_BF16_TFLOPS, f"unknown GPU {name!r}: H200 datasheet value used"


def batches(dataset_dir: str, length: int, budget: int, packed: bool, count: int, device):
    """``count`` training batches (tokens on ``device``, real-token count) of one layout."""
    from wensu.train.datamodule import ProteinDataModule

    module = ProteinDataModule(
        dataset_dir, max_tokens=budget, crop_length=length, concatenate=packed, verify="none"
    )
    module.setup("fit")
    out = []
    for batch in module.train_dataloader():
        if packed and batch["tokens"].shape != (budget // length, length):
            continue  # the last, shorter window would change the compiled shape
        out.append((batch["tokens"].to(device, non_blocking=True), int(batch["num_tokens"])))
        if len(out) == count:
            break
    return out


def hf_model(cfg: dict, length: int, device):
    from transformers import EsmConfig, EsmForMaskedLM

    config = EsmConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["d_model"],
        num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
        intermediate_size=cfg["ffn_dim"], hidden_act="gelu", position_embedding_type="rotary",
        max_position_embeddings=max(1026, length + 2), token_dropout=True,
        emb_layer_norm_before=False, pad_token_id=cfg["padding_idx"],
        mask_token_id=cfg["mask_idx"], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=cfg["layer_norm_eps"],
    )  # fmt: skip
    return EsmForMaskedLM._from_config(config, attn_implementation="sdpa").to(device).train()


def build_step(variant: str, cfg: dict, spec: dict, data: list, device):
    """A closure running one optimizer step on the next prefetched batch, and the model."""
    import torch

    from wensu.alphabet import get_alphabet
    from wensu.data.masking import mask_tokens

    torch.manual_seed(0)
    generator = torch.Generator(device).manual_seed(0)
    alphabet = get_alphabet()
    if variant.startswith("wensu"):
        from wensu.train.module import MaskedLMModule

        compiled = variant.endswith("compiled")
        inductor = compiled and spec["compile_backend"] == "inductor"
        model = MaskedLMModule(model=cfg, compile=inductor).to(device).train()
        if compiled and not inductor:  # the dry run: dynamo without inductor's C++ build
            model.model.compile(backend=spec["compile_backend"])

        def loss_of(tokens):
            return model.masked_lm_step(tokens, generator)["loss"]
    else:
        model = hf_model(cfg, spec["length"], device)

        def loss_of(tokens):
            inputs, labels = mask_tokens(tokens, alphabet, generator=generator)
            mask = (inputs != alphabet.padding_idx).long()
            return model(input_ids=inputs, attention_mask=mask, labels=labels).loss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    cycle = itertools.cycle(data)
    real_tokens: list[int] = []

    def step():
        tokens, count = next(cycle)
        with autocast(device):
            loss = loss_of(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real_tokens.append(count)

    return step, model, real_tokens


def measure(variant: str, cfg: dict, spec: dict, data: list, device, flops: float, peaks) -> dict:
    warmup = spec["warmup"] + (2 if variant.endswith("compiled") else 0)
    with peak_memory(device) as memory:
        step, model, real_tokens = build_step(variant, cfg, spec, data, device)
        times = time_steps(step, device, warmup, spec["steps"], spec["max_seconds_per_variant"])
    tokens = real_tokens[warmup:]
    rate = sum(tokens) / sum(times)
    datasheet, measured = peaks
    row = {
        "status": "ok",
        "step_s_median": median(times),
        "timed_steps": len(times),
        "real_tokens_per_step": sum(tokens) / len(tokens),
        "tokens_per_s": rate,
        "model_tflops": rate * flops / 1e12,
        "mfu_vs_datasheet": rate * flops / (datasheet * 1e12),
        "mfu_vs_measured_matmul": rate * flops / (measured * 1e12),
        "peak_gib": gib(memory["peak_bytes"]),
    }
    del step, model
    free_memory(device)
    return row


def plot(record: dict, path) -> str:
    plt = pyplot()
    models = [m for m in record["models"] if record["models"][m].get("variants")]
    variants = sorted({v for m in models for v in record["models"][m]["variants"]})
    figure, axis = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        values = [
            record["models"][m]["variants"].get(variant, {}).get("tokens_per_s", 0) for m in models
        ]
        axis.bar([j + i * width for j in range(len(models))], values, width, label=variant)
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models)
    axis.set_ylabel("real tokens / s (training step)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.set_title(f"training throughput, {record['precision']}, {record['token_budget']} tokens")
    return save_figure(figure, path)


def run(spec: dict, record: StageRecord) -> None:
    device = device_of(spec)
    deadline = Deadline(spec["time_budget_s"])
    datasheet, source = peak_tflops(device)
    measured = measured_matmul_tflops(device)
    record.update(
        device_name=device_name(device),
        precision="bf16 autocast" if device.type == "cuda" else "float32 (CPU dry run)",
        token_budget=spec["token_budget"],
        length=spec["length"],
        peak_bf16_tflops_used=datasheet,
        peak_source=source,
        measured_matmul_tflops=measured,
        flops_convention=train_flops_per_token.__doc__.split("\n\n")[0].replace("\n", " "),
        attention="wensu: dense SDPA (ESM-2 full attention); HF: attn_implementation=sdpa",
        optimizer="torch.optim.AdamW lr 1e-4, fused on CUDA, both sides",
        compile_backend=spec["compile_backend"],
        models={},
    )
    record.flush()
    length, budget = spec["length"], spec["token_budget"]
    packed = batches(spec["dataset_dir"], length, budget, True, spec["batches"], device)
    padded = batches(spec["dataset_dir"], length, budget, False, spec["batches"], device)
    synchronize(device)
    inputs = {"packed": packed, "padded": padded}
    plan = [
        (name, variant)
        for name in spec["models"]
        for variant in ("wensu_packed", "hf_packed", "hf_padded")
    ] + [(name, "wensu_packed_compiled") for name in spec["compile_models"]]
    for name, variant in plan:
        cfg = model_config(name, spec["dry_run"], attention={"backend": "dense", "window": None})
        entry = record["models"].setdefault(
            name,
            {"flops_per_token": train_flops_per_token(cfg, length), "variants": {}},
        )
        need = spec["compile_reserve_s"] if variant.endswith("compiled") else 5.0
        if not deadline.allows(need):
            entry["variants"][variant] = {"status": "skipped", "detail": "stage time budget spent"}
            record.flush()
            continue
        data = inputs["padded" if variant == "hf_padded" else "packed"]
        began = time.monotonic()
        try:
            peaks = (datasheet, measured)
            row = measure(variant, cfg, spec, data, device, entry["flops_per_token"], peaks)
        except Exception as error:  # noqa: BLE001 - recorded, the next variant still runs
            row = {"status": "error", "detail": error_text(error)}
            free_memory(device)
        row["wall_s_with_build"] = round(time.monotonic() - began, 2)
        entry["variants"][variant] = row
        entry.update(ratios(entry["variants"]))
        record.flush()
    record["figure"] = plot(record, spec["figure_dir"] / "throughput.png")


def ratios(variants: dict[str, Any]) -> dict:
    """wensu's best variant over each HF variant (real tokens/s)."""

    def rate(v):
        row = variants.get(v, {})
        return row.get("tokens_per_s") if row.get("status") == "ok" else None

    wensu = {v: rate(v) for v in ("wensu_packed", "wensu_packed_compiled") if rate(v)}
    if not wensu:
        return {}
    best = max(wensu, key=wensu.get)
    out: dict[str, Any] = {"wensu_best_variant": best}
    for anchor in ("hf_packed", "hf_padded"):
        if rate(anchor):
            out[f"ratio_wensu_over_{anchor}"] = wensu[best] / rate(anchor)
    if len(wensu) == 2:
        out["compile_speedup"] = wensu["wensu_packed_compiled"] / wensu["wensu_packed"]
    return out
