"""Memory preflight: estimate what a training step needs before building the model or a batch.

Without it an oversized run (``model=wensu_1b`` on a 24 GB machine) allocates for a minute and
then dies. The estimate per process is

* parameters, gradients and AdamW's two moments (counted exactly on a ``meta``-device model);
* activations kept for the backward pass: ``tokens x layers x per-token cost``, where the
  per-token cost of one layer is ``9 d_model + 2 ffn_dim`` values, fitted to the fwd+bwd peaks
  measured in ``experiments/results/longest_context_cpu.json`` (esm2_8m and esm2_35m, dense,
  within 4%) and matching the flash-style windowed backends
  (``longest_context_lean_cpu.json``); with activation checkpointing only each layer's input
  is kept plus one layer's full activations;
* the logits and their gradient.

It is compared with the memory available now (``MemAvailable`` and the cgroup limit on CPU,
``torch.cuda.mem_get_info`` on GPU) divided among the processes sharing it. When it does not fit
the error gives the numbers and the settings that would (``preflight=false`` skips the check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from wensu.model import EncoderConfig
from wensu.model.encoder import Encoder, count_parameters
from wensu.train.errors import TrainConfigError

GB = 1e9
HALF_PRECISIONS = ("16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true")
TRUE_HALF = ("16-true", "bf16-true")
DENSE_VALUES_PER_D = 9  # per layer and token: 9 x d_model + 2 x ffn_dim values (fit, see above)


@dataclass
class Estimate:
    parameters: int
    static_bytes: float  # weights + gradients + optimizer state
    per_token_bytes: float  # activations per token in the batch
    per_token_bytes_checkpointed: float  # the same with activation checkpointing
    fixed_activation_bytes: float  # one layer's activations when checkpointing (per token)
    tokens: int
    checkpointing: bool

    def activation_bytes(self, tokens: int | None = None, checkpointing: bool | None = None):
        tokens = self.tokens if tokens is None else tokens
        checkpointing = self.checkpointing if checkpointing is None else checkpointing
        per_token = self.per_token_bytes_checkpointed if checkpointing else self.per_token_bytes
        return tokens * per_token

    @property
    def total_bytes(self) -> float:
        return self.static_bytes + self.activation_bytes()


def count_parameters_meta(config: EncoderConfig) -> int:
    """Parameters of the encoder ``config`` describes, without allocating them."""
    with torch.device("meta"):
        return count_parameters(Encoder(config))


def estimate(config: EncoderConfig, tokens: int, precision: str) -> Estimate:
    """Bytes one training process needs for ``tokens`` padded tokens per batch."""
    parameters = count_parameters_meta(config)
    weight = 2 if precision in TRUE_HALF else 4
    static = parameters * (weight + weight + 2 * weight)  # weights, grads, AdamW exp_avg(_sq)
    value = 2 if precision in HALF_PRECISIONS else 4
    ffn = config.ffn_dim * (config.moe_top_k if config.ffn == "moe" else 1)
    # Windowed backends (chunked, flex) keep only q, k, v, the output and one log-sum-exp per
    # row for backward (flash-style), so attention adds nothing per window key.
    layer = DENSE_VALUES_PER_D * config.d_model + 2 * ffn
    logits = 3 * config.vocab_size * 4  # float32 logits, log-softmax and their gradient
    per_token = config.num_layers * layer * value + logits
    checkpointed = config.num_layers * config.d_model * value + layer * value + logits
    return Estimate(
        parameters=parameters,
        static_bytes=float(static),
        per_token_bytes=float(per_token),
        per_token_bytes_checkpointed=float(checkpointed),
        fixed_activation_bytes=float(layer * value),
        tokens=int(tokens),
        checkpointing=bool(config.activation_checkpointing),
    )


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_available() -> float | None:
    """Room left under a cgroup v2 (or v1) memory limit, when one is set."""
    pairs = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    )  # fmt: skip
    for limit_path, usage_path in pairs:
        try:
            limit = Path(limit_path).read_text().strip()
            usage = float(Path(usage_path).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and float(limit) < 1 << 60:
            return float(limit) - usage
    return None


def available_bytes(accelerator: str) -> tuple[float | None, str]:
    """Free memory for one device (GPU) or the machine (CPU), and what it is."""
    if accelerator == "gpu" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(0)
        return float(free), f"free on GPU 0 ({torch.cuda.get_device_name(0)})"
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return (min(found), "CPU RAM available") if found else (None, "CPU RAM (unknown)")


def _fitting_tokens(est: Estimate, budget: float, checkpointing: bool) -> int:
    room = budget - est.static_bytes
    per_token = est.per_token_bytes_checkpointed if checkpointing else est.per_token_bytes
    return max(0, int(room // per_token))


def check_memory(
    config: EncoderConfig,
    tokens: int,
    precision: str,
    accelerator: str,
    processes: int,
    crop_length: int,
) -> Estimate:
    """Raise a one-line :class:`TrainConfigError` when a training step cannot fit in memory."""
    est = estimate(config, tokens, precision)
    available, what = available_bytes(accelerator)
    if available is None:
        return est
    share = available if accelerator == "gpu" else available / max(processes, 1)
    if est.total_bytes <= share:
        return est
    per = f" per process ({processes} share it)" if processes > 1 and accelerator != "gpu" else ""
    head = (
        f"memory preflight: this run needs about {est.total_bytes / GB:.1f} GB{per} "
        f"({est.parameters / 1e6:,.1f} M parameters: {est.static_bytes / GB:.1f} GB weights, "
        f"gradients and AdamW state; activations for data.max_tokens={tokens}: "
        f"{est.activation_bytes() / GB:.1f} GB) but {share / GB:.1f} GB {what}"
    )
    return_hint = "; preflight=false skips this check"
    if est.static_bytes + crop_length * est.per_token_bytes_checkpointed > share:
        raise TrainConfigError(
            f"{head}; the weights and optimizer state alone need {est.static_bytes / GB:.1f} GB: "
            f"use a smaller model{return_hint}"
        )
    options = []
    fit = _fitting_tokens(est, share, est.checkpointing)
    if fit >= crop_length:
        options.append(f"data.max_tokens={_round_down(fit, crop_length)}")
    if not est.checkpointing:
        fit_ckpt = _fitting_tokens(est, share, True)
        if fit_ckpt >= tokens:
            options.append("model.activation_checkpointing=true")
        elif fit_ckpt >= crop_length:
            budget = _round_down(fit_ckpt, crop_length)
            options.append(f"model.activation_checkpointing=true data.max_tokens={budget}")
    if not options:
        options.append(f"a shorter data.crop_length (now {crop_length})")
    raise TrainConfigError(f"{head}; would fit: {' or '.join(options)}{return_hint}")


def _round_down(tokens: int, floor: int) -> int:
    """A friendly budget: down to a multiple of 256 when that stays >= ``floor``."""
    rounded = tokens // 256 * 256
    return rounded if rounded >= floor else tokens


def processes_per_machine(trainer: dict, accelerator: str) -> int:
    """Training processes on this machine (CPU DDP runs one per ``devices``)."""
    devices = trainer.get("devices", 1)
    if accelerator == "gpu":
        return 1
    return int(devices) if isinstance(devices, int) and devices > 0 else 1
