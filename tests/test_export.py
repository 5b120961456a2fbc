"""wensu.export: safetensors export round-trips; the HF export runs in transformers unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from wensu.alphabet import get_alphabet
from wensu.checkpoint import load, save_encoder_checkpoint
from wensu.export import export_hf, export_safetensors, main
from wensu.model import Encoder, EncoderConfig

TINY = EncoderConfig(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)
# N-termini of two E. coli proteins (RpsD, GyrA).
SEQUENCES = ["MARYLGPKLKLSRREGTDLFLKSGVRAIDTKCKIEQAPGQHGARK", "MSDLAREITPVNIEEELKSSYLD"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(7)
    return Encoder(TINY).eval()


def _tokens() -> torch.Tensor:
    return torch.as_tensor(get_alphabet().batch_encode(SEQUENCES))


def test_safetensors_export_round_trips(encoder, tmp_path):
    directory = export_safetensors(encoder, tmp_path / "wensu")
    meta = json.loads((directory / "wensu_config.json").read_text())
    assert meta["model"] == TINY.to_dict() and len(meta["alphabet"]) == 33
    loaded, _ = load(directory)
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_hf_export_matches_in_transformers(encoder, tmp_path):
    transformers = pytest.importorskip("transformers")
    directory = export_hf(encoder, tmp_path / "hf")
    model = transformers.EsmForMaskedLM.from_pretrained(directory).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    tokens = _tokens()
    assert torch.equal(ids["input_ids"], tokens)
    with torch.no_grad():
        expected = encoder(tokens)["logits"]
        actual = model(**ids).logits
    mask = tokens != 1
    torch.testing.assert_close(actual[mask], expected[mask], rtol=1e-4, atol=1e-4)


def test_export_command_line(encoder, tmp_path, capsys):
    checkpoint = save_encoder_checkpoint(encoder, tmp_path / "model.ckpt")
    assert main([str(checkpoint), str(tmp_path / "out"), "--format", "safetensors"]) == 0
    loaded, _ = load(tmp_path / "out")
    assert torch.equal(loaded.embed_tokens.weight, encoder.embed_tokens.weight)
    assert main([str(tmp_path / "missing.ckpt"), str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
