"""Stage b: attention backends alone, fwd+bwd, at 8k / 32k / 131k tokens.

On q, k, v of shape [1, heads, L, head_dim] (ESM-2 8M heads: 20 x 16), bf16 on CUDA:

* ``flex``: wensu's FlexAttention backend (block-sparse, compiled), window + global tokens;
* ``chunked``: wensu's blocked pure-PyTorch backend, same pattern;
* ``dense_masked``: wensu's dense backend, same pattern through SDPA with a materialised L x L
  mask (up to ``dense_masked_max`` tokens: the mask is quadratic);
* ``sdpa_flash``: full attention (no window) through SDPA's flash kernel: what ESM-2's dense
  attention costs at that length, the anchor.

Time is the median of ``repeats`` fwd+bwd steps after a warm-up (which also compiles flex),
memory the peak above what was held before one step. At the first length, outputs and gradients
of the windowed backends are compared with the float32 dense reference of the same pattern
(``‖x - ref‖ / ‖ref‖``; bf16 arithmetic lands between 1e-3 and 1e-2).
"""

from __future__ import annotations

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
    median,
    peak_memory,
    pyplot,
    save_figure,
    time_steps,
)

BACKENDS = ("flex", "chunked", "dense_masked", "sdpa_flash")
BF16_TOLERANCE = 2e-2


def attention_fn(name: str, pattern, length: int, device):
    """fn(q, k, v) -> output for one backend (wensu's take pre-scaled q: scale 1)."""
    import torch.nn.functional as F

    if name == "sdpa_flash":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernels = [SDPBackend.FLASH_ATTENTION] if device.type == "cuda" else [SDPBackend.MATH]

        def flash(q, k, v):
            with sdpa_kernel(kernels):
                return F.scaled_dot_product_attention(q, k, v, scale=1.0)

        return flash
    from wensu.model.attention import FlexAttention, build_backend

    if name == "flex" and device.type == "cpu":
        # The dry run: eager FlexAttention (the compiled CPU kernel takes minutes to build).
        backend = FlexAttention(pattern, 128, compile=False)
    else:
        backend = build_backend({"dense_masked": "dense"}.get(name, name), pattern, 128)
    return lambda q, k, v: backend.prepare(None, length, device)(q, k, v)


def inputs(spec: dict, length: int, device, dtype, seed: int = 0):
    import torch

    generator = torch.Generator(device).manual_seed(seed)
    shape = (1, spec["heads"], length, spec["head_dim"])
    scale = spec["head_dim"] ** -0.5
    q, k, v = (torch.randn(shape, device=device, generator=generator) for _ in range(3))
    grad = torch.randn(shape, device=device, generator=generator)
    tensors = [(q * scale).to(dtype), k.to(dtype), v.to(dtype)]
    return [t.requires_grad_() for t in tensors], grad.to(dtype)


def fwd_bwd(fn, tensors, grad, device):
    with autocast(device):
        out = fn(*tensors)
    out.backward(grad)
    result = out.detach(), [t.grad.detach().clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return result


def relative_error(x, ref) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def gradient_check(spec: dict, pattern, length: int, device, trains: dict) -> dict:
    """Each windowed backend in the working dtype against the float32 dense reference."""
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ref_tensors, ref_grad = inputs(spec, length, device, torch.float32, seed=1)
    reference = attention_fn("dense_masked", pattern, length, device)
    with torch.autocast(device.type, enabled=False):
        ref_out = reference(*ref_tensors)
    ref_out.backward(ref_grad)
    ref_grads = [t.grad for t in ref_tensors]
    out = {"reference": "dense backend, same pattern, float32", "tolerance": BF16_TOLERANCE}
    for name in ("flex", "chunked", "dense_masked"):
        if not trains[name]:
            out[name] = {"status": "skipped", "detail": "no backward on this device"}
            continue
        tensors, grad = inputs(spec, length, device, dtype, seed=1)
        got, grads = fwd_bwd(attention_fn(name, pattern, length, device), tensors, grad, device)
        errors = {"output": relative_error(got, ref_out)}
        errors.update({f"grad_{n}": relative_error(g, r)
                       for n, g, r in zip("qkv", grads, ref_grads, strict=True)})  # fmt: skip
        out[name] = {**errors, "equal_within_tolerance": max(errors.values()) <= BF16_TOLERANCE}
    free_memory(device)
    return out


def measure(name: str, spec: dict, pattern, length: int, device, train: bool) -> dict:
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tensors, grad = inputs(spec, length, device, dtype)
    fn = attention_fn(name, pattern, length, device)
    if train:

        def step():
            fwd_bwd(fn, tensors, grad, device)
    else:

        def step():
            with torch.no_grad(), autocast(device):
                fn(*tensors)

    times = time_steps(step, device, warmup=1, steps=spec["repeats"], max_seconds=10.0)
    with peak_memory(device) as memory:
        step()
    row = {"status": "ok", "mode": "fwd+bwd" if train else "fwd only", "seconds": median(times),
           "peak_bytes": memory["peak_bytes"], "peak_gib": gib(memory["peak_bytes"])}  # fmt: skip
    return row


def ratio_table(results: dict) -> dict:
    """For each length: time and peak-memory ratios of the anchors over the windowed backends."""
    out = {}
    for length, rows in results.items():
        ok = {n: r for n, r in rows.items() if r.get("status") == "ok" and r["mode"] == "fwd+bwd"}
        entry = {}
        for slow in ("sdpa_flash", "dense_masked", "chunked"):
            for fast in ("flex", "chunked"):
                if slow != fast and slow in ok and fast in ok:
                    entry[f"{slow}_over_{fast}_time"] = ok[slow]["seconds"] / ok[fast]["seconds"]
                    entry[f"{slow}_over_{fast}_memory"] = max(ok[slow]["peak_bytes"], 1) / max(
                        ok[fast]["peak_bytes"], 1
                    )
        out[length] = entry
    return out


def plot(results: dict, setup: dict, path) -> str:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    title = (
        f"attention alone, window {setup['window']} + {setup['num_global']} global, "
        f"{setup['heads']} heads x {setup['head_dim']}, {setup['dtype']}"
    )
    figure.suptitle(title, fontsize=9)
    for name in BACKENDS:
        points = [(int(L), r[name]) for L, r in results.items()
                  if r.get(name, {}).get("status") == "ok"]  # fmt: skip
        if points:
            xs = [p[0] for p in points]
            left.plot(xs, [p[1]["seconds"] for p in points], "o-", label=name)
            right.plot(xs, [p[1]["peak_gib"] for p in points], "o-", label=name)
    for axis, label in ((left, "fwd+bwd seconds"), (right, "peak GiB")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("tokens")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    return save_figure(figure, path)


def run(spec: dict, record: StageRecord) -> None:
    from wensu.model.attention import AttentionPattern

    device = device_of(spec)
    deadline = Deadline(spec["time_budget_s"])
    compile_lengths_dynamically(device)
    pattern = AttentionPattern(spec["window"], spec["num_global"])
    trains = {name: device.type == "cuda" or name != "flex" for name in BACKENDS}
    record.update(
        setup={k: spec[k] for k in ("window", "num_global", "heads", "head_dim", "repeats")}
        | {"batch": 1, "dtype": "bf16" if device.type == "cuda" else "float32 (CPU dry run)",
           "flex_on_cpu": "forward only: PyTorch has no FlexAttention backward on CPU"},
        results={},
    )  # fmt: skip
    for index, length in enumerate(spec["lengths"]):
        rows = record["results"].setdefault(str(length), {})
        if index == 0:
            try:
                record["gradient_check"] = gradient_check(spec, pattern, length, device, trains)
                record["gradient_check"]["length"] = length
            except Exception as error:  # noqa: BLE001
                record["gradient_check"] = {"status": "error", "detail": error_text(error)}
            record.flush()
        for name in BACKENDS:
            if name == "dense_masked" and length > spec["dense_masked_max"]:
                rows[name] = {"status": "skipped", "detail": "L x L mask: quadratic memory"}
            elif not deadline.allows(3.0):
                rows[name] = {"status": "skipped", "detail": "stage time budget spent"}
            else:
                try:
                    rows[name] = measure(name, spec, pattern, length, device, trains[name])
                    free_memory(device)
                except Exception as error:  # noqa: BLE001
                    status = "oom" if is_out_of_memory(error) else "error"
                    rows[name] = {"status": status, "detail": error_text(error)}
                    free_memory(device)
            record["ratios"] = ratio_table(record["results"])
            record.flush()
    record["figure"] = plot(
        record["results"], record["setup"], spec["figure_dir"] / "attention.png"
    )
