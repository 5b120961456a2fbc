"""wensu.embed.settings.EmbedSettings: one set of options for the CLI, the Python API and the
probes, turned into the same forward-pass settings everywhere."""

from __future__ import annotations

import pytest

from wensu.embed import EmbedError, EmbedSettings
from wensu.embed.compute import ComputeSettings


def test_cli_options_become_settings_with_scalars_as_lists_and_extra_keys_ignored():
    settings = EmbedSettings.from_options(
        {"checkpoint": "m.ckpt", "layers": -1, "pooling": "cls", "max_tokens": "512", "dedup": 1}
    )
    assert settings.layers == [-1] and settings.pooling == ["cls"]
    assert settings.max_tokens == 512 and settings.dedup is True
    assert settings.device == "auto" and settings.format == "h5"  # defaults of conf/embed.yaml


def test_compute_settings_default_context_windows_and_pooling_order():
    settings = EmbedSettings(layers=(0, -1, 4), pooling=("cls", "mean"), max_tokens=64)
    assert settings.compute_settings(num_layers=4, trained_context=None) == ComputeSettings(
        layers=(0, 4),
        pooling=("mean", "cls"),
        max_length=1022,
        window=1022,
        stride=511,
        max_tokens=64,
    )
    stored = settings.compute_settings(num_layers=4, trained_context=100)
    assert (stored.max_length, stored.window, stored.stride) == (100, 100, 50)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling": ("max",)}, "pooling must be a non-empty subset"),
        ({"format": "csv"}, "format must be one of"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"max_tokens": 0}, "devices and max_tokens must be >= 1"),
        ({"devices": 2, "device": "cuda:1"}, "needs device=auto, cpu or cuda"),
    ],
)
def test_invalid_options_name_the_option(options, message):
    with pytest.raises(EmbedError, match=message):
        EmbedSettings(**options).validate()


def test_bad_window_is_an_embed_error():
    with pytest.raises(EmbedError, match="1 <= stride <= window"):
        EmbedSettings(window=10, stride=20).compute_settings(num_layers=2, trained_context=None)
