"""The evaluation context for a protein checkpoint: the frozen encoder, its random-init twin
and the feature extractors every protein probe reads embeddings and attentions from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wensu.datasets.location import data_root
from wensu.embed.model import load_model
from wensu.model import count_parameters
from wensu.probes.common.baselines import random_init_like
from wensu.probes.common.context import MODEL, RANDOM_INIT, EvalContext, config_fields
from wensu.probes.common.features import EncoderFeatures, FeatureSettings
from wensu.probes.common.settings import resolve_device, set_cpu_threads

DEFAULT_MAX_LENGTH = 1022


def build_protein_context(cfg: Any, output: Path) -> tuple[EvalContext, dict[str, Any]]:
    """Load the checkpoint, build its random-init twin and the feature extractors."""
    loaded = load_model(str(cfg.checkpoint))
    device = resolve_device(str(cfg.device))
    threads = set_cpu_threads(cfg.cpu_threads)
    encoder = loaded.encoder.to(device).eval()
    settings = FeatureSettings(
        layer=int(cfg.layer),
        max_tokens=int(cfg.max_tokens),
        max_length=int(cfg.max_length or loaded.trained_context or DEFAULT_MAX_LENGTH),
        device=device,
        show_progress=bool(cfg.progress),
    )
    twin = random_init_like(encoder, seed=int(cfg.seed))
    encoders = [
        EncoderFeatures(MODEL, encoder, loaded.alphabet, settings),
        EncoderFeatures(RANDOM_INIT, twin, loaded.alphabet, settings),
    ]
    model_cfg = encoder.cfg
    checkpoint = {
        "path": loaded.description,
        "sha256": loaded.sha256,
        "config": model_cfg.to_dict(),
        "summary": (
            f"{model_cfg.num_layers} layers, d_model {model_cfg.d_model}, "
            f"{model_cfg.num_heads} heads, "
            f"attention {model_cfg.attention.backend} (window {model_cfg.attention.window}), "
            f"{count_parameters(encoder):,} parameters; max_length {settings.max_length}"
        ),
    }
    ctx = EvalContext(
        encoders=encoders,
        data_dir=data_root(cfg.data_dir),  # each probe's set is located when it runs
        output_dir=output,
        checkpoint=checkpoint,
        **config_fields(cfg),
    )
    run_settings = {
        "device": device,
        "cpu_threads": threads,
        "layer": int(cfg.layer),
        "max_length": settings.max_length,
    }
    return ctx, run_settings
