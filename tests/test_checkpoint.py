"""wensu.checkpoint: wensu checkpoints round-trip, ESM-2 files dispatch, mismatches are refused."""

from __future__ import annotations

import pytest
import torch

from wensu.alphabet import get_alphabet
from wensu.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load,
    load_encoder_weights,
    read_model_config,
    save_encoder_checkpoint,
)
from wensu.model import Encoder, EncoderConfig

TINY = EncoderConfig(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSDNGPQNQRNAPRITFGGPSDSTG"]


def _encoder(config: EncoderConfig = TINY, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(config).eval()


def _logits(encoder: Encoder) -> torch.Tensor:
    tokens = torch.as_tensor(get_alphabet().batch_encode(SEQUENCES))
    with torch.no_grad():
        return encoder(tokens)["logits"]


def test_saved_checkpoint_loads_back_identically(tmp_path):
    encoder = _encoder()
    path = save_encoder_checkpoint(encoder, tmp_path / "tiny.ckpt", {"max_length": 1022})
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["model"] == TINY.to_dict()
    assert raw["hyper_parameters"]["max_length"] == 1022
    assert all(name.startswith("model.") for name in raw["state_dict"])
    loaded, alphabet = load(path)
    assert not loaded.training and alphabet.mask_idx == 32
    assert loaded.cfg == TINY
    torch.testing.assert_close(_logits(loaded), _logits(encoder), rtol=0, atol=0)
    assert read_model_config(path)["d_model"] == 32


def test_saved_checkpoint_is_a_lightning_checkpoint(tmp_path):
    from wensu.train.module import MaskedLMModule

    encoder = _encoder()
    path = save_encoder_checkpoint(encoder, tmp_path / "tiny.ckpt")
    module = MaskedLMModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(_logits(module.model.eval()), _logits(encoder), rtol=0, atol=0)


def test_hugging_face_directories_go_through_interop(tmp_path):
    from wensu.interop import save_hf

    encoder = _encoder(seed=3)
    save_hf(encoder, tmp_path / "hf")
    for path in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        loaded, _ = load(path)
        torch.testing.assert_close(_logits(loaded), _logits(encoder), rtol=1e-5, atol=1e-5)


def test_unreadable_and_missing_files_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "absent.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="broken.ckpt"):
        load(broken)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_model_config(broken)


def test_weights_of_another_size_are_refused_in_one_line(tmp_path):
    bigger = EncoderConfig(num_layers=3, d_model=48, num_heads=4, ffn_dim=64)
    path = save_encoder_checkpoint(_encoder(bigger), tmp_path / "bigger.ckpt")
    target = _encoder()
    with pytest.raises(CheckpointMismatchError) as caught:
        load_encoder_weights(target, path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "num_layers=3, d_model=48" in message and "num_layers=2, d_model=32" in message


def test_weights_load_into_a_model_with_other_attention(tmp_path):
    path = save_encoder_checkpoint(_encoder(seed=5), tmp_path / "dense.ckpt")
    windowed = EncoderConfig.from_dict(
        {**TINY.to_dict(), "attention": {"backend": "chunked", "window": 8, "block_size": 4}}
    )
    target = load_encoder_weights(Encoder(windowed), path)
    source, _ = load(path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor)


def test_cell_checkpoint_is_refused_with_a_pointer(tmp_path):
    from wensu.checkpoint import save_cell_checkpoint
    from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig

    cfg = CellEncoderConfig(
        vocab_size=12, num_bins=6, num_layers=1, d_model=16, num_heads=2, ffn_dim=32
    )
    path = save_cell_checkpoint(
        CellEncoder(cfg), [f"G{i}" for i in range(8)], tmp_path / "cells.ckpt"
    )
    with pytest.raises(CheckpointError, match="cells.ckpt: a single-cell expression model"):
        load(path)
