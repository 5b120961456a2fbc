"""ESM-2 interop: HF and fair-esm layouts convert into a wensu Encoder with identical outputs.

The reference is a random-init Hugging Face `EsmForMaskedLM` with the ESM-2 8M architecture
(LayerNorms and biases perturbed away from 1/0 so every tensor matters). No official fair-esm
file is available offline, so the fair-esm layout is synthesised by renaming the HF tensors the
way fair-esm names them (`encoder.sentence_encoder.layers.N.fc1`, `rot_emb.inv_freq`, ...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import warnings

import pytest
import torch
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.interop import EsmCheckpointError, from_fair_esm, from_hf, load_esm2, save_hf, to_hf

transformers = pytest.importorskip("transformers")
EsmConfig, EsmForMaskedLM = transformers.EsmConfig, transformers.EsmForMaskedLM

ATOL = 1e-5


def esm2_8m_config(num_layers: int = 6) -> EsmConfig:
    return EsmConfig(
        vocab_size=33,
        hidden_size=320,
        num_hidden_layers=num_layers,
        num_attention_heads=20,
        intermediate_size=1280,
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        mask_token_id=32,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=1026,
        attn_implementation="eager",
    )


def random_hf_model(num_layers: int, seed: int) -> EsmForMaskedLM:
    torch.manual_seed(seed)
    model = EsmForMaskedLM(esm2_8m_config(num_layers)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def hf_model() -> EsmForMaskedLM:
    return random_hf_model(6, seed=0)


@pytest.fixture(scope="module")
def hf_model_2_layers() -> EsmForMaskedLM:
    return random_hf_model(2, seed=1)


def read_fasta(path) -> list[str]:
    records = []
    for block in path.read_text().split(">")[1:]:
        records.append("".join(block.splitlines()[1:]))
    return records


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    """Four real UniParc sequences (N-terminal pieces of 70, 52, 37 and 21 residues: short, so
    the CPU tests stay fast) padded into one batch, two of them with <mask> tokens."""
    records = read_fasta(require_shared("sequences/uniparc/uniparc_gq1-blast-fasta.fasta"))
    sequences = [record[:n] for record, n in zip(records[:4], (70, 52, 37, 21), strict=True)]
    batch = torch.as_tensor(get_alphabet().batch_encode(sequences))
    mask_idx = get_alphabet().mask_idx
    batch[0, [5, 17, 40, 41]] = mask_idx
    batch[3, 10] = mask_idx
    assert len({len(s) for s in sequences}) == 4 and batch.eq(get_alphabet().padding_idx).any()
    return batch


@pytest.fixture(scope="module")
def hf_reference(hf_model, tokens):
    """One HF forward of the 6-layer model: logits, per-layer hidden states, final state."""
    final = []  # the output of emb_layer_norm_after, whatever hidden_states[-1] is in this version
    hook = hf_model.esm.encoder.emb_layer_norm_after.register_forward_hook(
        lambda module, inputs, output: final.append(output)
    )
    with torch.no_grad():
        out = hf_model(
            input_ids=tokens, attention_mask=tokens.ne(1).long(), output_hidden_states=True
        )
    hook.remove()
    return out.logits, out.hidden_states, final[0]


@pytest.fixture(scope="module")
def hf_reference_2_layers(hf_model_2_layers, tokens):
    return hf_logits(hf_model_2_layers, tokens)


def hf_logits(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=tokens.ne(1).long()).logits


def wensu_logits(encoder, tokens) -> torch.Tensor:
    with torch.no_grad():
        return encoder(tokens)["logits"]


def assert_same_logits(actual, expected, tokens):
    real = tokens.ne(1)  # padding positions are undefined in both models
    torch.testing.assert_close(actual[real], expected[real], atol=ATOL, rtol=0)


def test_from_hf_matches_hf_logits_and_hidden_states(hf_model, hf_reference, tokens):
    logits, hidden_states, last_hidden_state = hf_reference
    encoder = from_hf(hf_model.state_dict(), hf_model.config)
    assert not encoder.training and encoder.cfg.num_heads == 20 and encoder.cfg.ffn_dim == 1280
    with torch.no_grad():
        out = encoder(tokens, repr_layers=range(7))
    assert_same_logits(out["logits"], logits, tokens)
    real = tokens.ne(1)
    for layer in range(6):  # 0 = embedding output, i = output of layer i
        torch.testing.assert_close(
            out["representations"][layer][real], hidden_states[layer][real], atol=ATOL, rtol=0
        )
    torch.testing.assert_close(  # 6 = after emb_layer_norm_after
        out["representations"][6][real], last_hidden_state[real], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize(
    ("backend", "window"),
    [("dense", None), ("chunked", None), ("flex", None), ("dense", 80), ("chunked", 80)],
)
def test_every_backend_and_a_covering_window_match_hf(
    hf_model_2_layers, hf_reference_2_layers, tokens, backend, window
):
    assert window is None or window >= tokens.shape[1]
    attention = {"backend": backend, "window": window, "block_size": 16}
    encoder = from_hf(hf_model_2_layers.state_dict(), hf_model_2_layers.config, attention=attention)
    assert encoder.cfg.attention.backend == backend and encoder.cfg.attention.window == window
    assert_same_logits(wensu_logits(encoder, tokens), hf_reference_2_layers, tokens)


def test_to_hf_round_trip_loads_strictly_and_gives_same_logits(
    hf_model_2_layers, hf_reference_2_layers, tokens, tmp_path
):
    hf_model = hf_model_2_layers
    encoder = from_hf(hf_model.state_dict(), hf_model.config)
    state_dict, config = to_hf(encoder)
    json.dumps(config)  # plain JSON
    rebuilt = EsmForMaskedLM(EsmConfig(**config, attn_implementation="eager")).eval()
    result = rebuilt.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == [
        "esm.contact_head.regression.bias",
        "esm.contact_head.regression.weight",
    ]
    expected = hf_reference_2_layers
    assert_same_logits(hf_logits(rebuilt, tokens), expected, tokens)

    save_hf(encoder, tmp_path / "exported")
    loaded, info = EsmForMaskedLM.from_pretrained(
        tmp_path / "exported", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["unexpected_keys"]
    assert {k for k in info["missing_keys"] if "contact_head" not in k} == set()
    assert_same_logits(hf_logits(loaded.eval(), tokens), expected, tokens)
    assert_same_logits(wensu_logits(load_esm2(tmp_path / "exported"), tokens), expected, tokens)


def fair_esm_layout(hf_state: dict, num_layers: int) -> dict:
    """The HF tensors under the names of a raw fair-esm ESM-2 `.pt` file."""
    renames = [
        ("esm.embeddings.word_embeddings.", "encoder.sentence_encoder.embed_tokens."),
        ("esm.encoder.emb_layer_norm_after.", "encoder.sentence_encoder.emb_layer_norm_after."),
        ("esm.contact_head.", "encoder.sentence_encoder.contact_head."),
        ("lm_head.", "encoder.lm_head."),
    ]
    per_layer = [
        ("attention.self.query.", "self_attn.q_proj."),
        ("attention.self.key.", "self_attn.k_proj."),
        ("attention.self.value.", "self_attn.v_proj."),
        ("attention.output.dense.", "self_attn.out_proj."),
        ("attention.LayerNorm.", "self_attn_layer_norm."),
        ("intermediate.dense.", "fc1."),
        ("output.dense.", "fc2."),
        ("LayerNorm.", "final_layer_norm."),
    ]
    out = {}
    for name, tensor in hf_state.items():
        if name in ("esm.rotary_embeddings.inv_freq", "lm_head.decoder.weight"):
            continue
        if name.startswith("esm.encoder.layer."):
            index, rest = name.removeprefix("esm.encoder.layer.").split(".", 1)
            old, new = next((o, n) for o, n in per_layer if rest.startswith(o))
            name = f"encoder.sentence_encoder.layers.{index}.{new}{rest.removeprefix(old)}"
        else:
            old, new = next((o, n) for o, n in renames if name.startswith(o))
            name = new + name.removeprefix(old)
        out[name] = tensor.clone()
    inv_freq = hf_state["esm.rotary_embeddings.inv_freq"]
    for index in range(num_layers):
        out[f"encoder.sentence_encoder.layers.{index}.self_attn.rot_emb.inv_freq"] = inv_freq
    out["encoder.lm_head.weight"] = out["encoder.sentence_encoder.embed_tokens.weight"].clone()
    return out


def test_fair_esm_file_and_state_dict_match_hf_logits(hf_model, hf_reference, tokens, tmp_path):
    fair_state = fair_esm_layout(hf_model.state_dict(), num_layers=6)
    hparams = argparse.Namespace(
        encoder_layers=6, encoder_embed_dim=320, encoder_attention_heads=20, token_dropout=True
    )
    path = tmp_path / "esm2_t6_8M_UR50D.pt"
    torch.save({"model": fair_state, "cfg": {"model": hparams}}, path)
    expected = hf_reference[0]
    assert_same_logits(wensu_logits(load_esm2(path), tokens), expected, tokens)
    # A bare state dict without prefixes or config: heads come from the published ESM-2 sizes.
    bare = {
        k.replace("encoder.sentence_encoder.", "").replace("encoder.", ""): v
        for k, v in fair_state.items()
    }
    assert_same_logits(wensu_logits(from_fair_esm(bare), tokens), expected, tokens)
    # Older-style files carry an argparse `args` with ESM-1b field names instead of `cfg`.
    args = argparse.Namespace(layers=6, embed_dim=320, attention_heads=20, token_dropout=True)
    torch.save({"model": fair_state, "args": args}, tmp_path / "args_style.pt")
    assert load_esm2(tmp_path / "args_style.pt").cfg == load_esm2(path).cfg
    wrong = argparse.Namespace(encoder_layers=5, encoder_embed_dim=320)
    torch.save({"model": fair_state, "cfg": {"model": wrong}}, tmp_path / "wrong.pt")
    with pytest.raises(EsmCheckpointError, match=r"wrong\.pt: config says 5 layers"):
        load_esm2(tmp_path / "wrong.pt")


def test_load_esm2_reads_hf_save_pretrained_and_pytorch_bin(
    hf_model_2_layers, hf_reference_2_layers, tokens, tmp_path
):
    hf_model, expected = hf_model_2_layers, hf_reference_2_layers
    hf_model.save_pretrained(tmp_path / "snapshot")
    assert_same_logits(wensu_logits(load_esm2(tmp_path / "snapshot"), tokens), expected, tokens)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(hf_model.state_dict(), bin_dir / "pytorch_model.bin")
    (bin_dir / "config.json").write_text(hf_model.config.to_json_string())
    assert_same_logits(wensu_logits(load_esm2(bin_dir), tokens), expected, tokens)
    assert_same_logits(
        wensu_logits(load_esm2(bin_dir / "pytorch_model.bin"), tokens), expected, tokens
    )
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="2MB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert_same_logits(wensu_logits(load_esm2(tmp_path / "sharded"), tokens), expected, tokens)


def test_float16_rounded_rotary_frequencies_are_detected(hf_model_2_layers):
    state = dict(hf_model_2_layers.state_dict())
    key = "esm.rotary_embeddings.inv_freq"
    state[key] = state[key].half().float()
    rounded = from_hf(state, hf_model_2_layers.config)
    assert rounded.cfg.rotary_inv_freq == state[key].tolist()
    exact = from_hf(hf_model_2_layers.state_dict(), hf_model_2_layers.config)
    assert exact.cfg.rotary_inv_freq is None


def test_float16_rounded_rotary_frequencies_are_reproduced(tokens):
    model = random_hf_model(2, seed=2)
    with torch.no_grad():
        inv_freq = model.esm.rotary_embeddings.inv_freq
        inv_freq.copy_(inv_freq.half().float())  # what the published checkpoints carry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = from_hf(model.state_dict(), model.config)
    assert_same_logits(wensu_logits(encoder, tokens), hf_logits(model, tokens), tokens)


def test_missing_unknown_and_misshapen_tensors_are_named(hf_model_2_layers, tmp_path):
    config = hf_model_2_layers.config
    state = dict(hf_model_2_layers.state_dict())
    missing = {k: v for k, v in state.items() if k != "esm.encoder.layer.1.output.dense.bias"}
    with pytest.raises(EsmCheckpointError, match=r"missing tensors: layers\.1\.ffn\.fc2\.bias"):
        from_hf(missing, config)
    with pytest.raises(EsmCheckpointError, match="esm.encoder.layer.0.mystery.weight"):
        from_hf({**state, "esm.encoder.layer.0.mystery.weight": torch.zeros(1)}, config)
    misshapen = {**state, "esm.encoder.layer.0.intermediate.dense.weight": torch.zeros(7, 320)}
    with pytest.raises(
        EsmCheckpointError, match=r"intermediate\.dense\.weight has shape \[7, 320\]"
    ):
        from_hf(misshapen, config)
    untied = {**state, "lm_head.decoder.weight": torch.zeros(33, 320)}
    with pytest.raises(EsmCheckpointError, match="differs from the word embedding"):
        from_hf(untied, config)
    absolute = {**config.to_dict(), "position_embedding_type": "absolute"}
    with pytest.raises(EsmCheckpointError, match="position_embedding_type"):
        from_hf(state, absolute)


def test_unknown_and_unsafe_files_are_refused_with_the_file_name(tmp_path):
    unknown = tmp_path / "weights.pt"
    torch.save({"foo.weight": torch.zeros(2)}, unknown)
    with pytest.raises(EsmCheckpointError, match=r"weights\.pt: unknown checkpoint layout"):
        load_esm2(unknown)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "cfg": datetime.date(2024, 1, 1)}, unsafe)
    with pytest.raises(EsmCheckpointError, match=r"unsafe\.pt: the file pickles datetime\.date"):
        load_esm2(unsafe)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EsmCheckpointError, match="garbage.pt: not a readable"):
        load_esm2(garbage)
    with pytest.raises(EsmCheckpointError, match="no such ESM-2 checkpoint"):
        load_esm2(tmp_path / "absent.pt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(EsmCheckpointError, match="no ESM-2 weights found"):
        load_esm2(tmp_path / "emptydir")
    esm1b = tmp_path / "esm1b.pt"
    torch.save({"model": {"embed_positions.weight": torch.zeros(2, 2)}}, esm1b)
    with pytest.raises(EsmCheckpointError, match="ESM-1"):
        load_esm2(esm1b)


def test_to_hf_refuses_moe_and_warns_for_windows(hf_model_2_layers):
    from wensu.model import EncoderConfig
    from wensu.model.encoder import Encoder

    moe = Encoder(EncoderConfig(num_layers=1, d_model=32, num_heads=2, ffn_dim=64, ffn="moe"))
    with pytest.raises(ValueError, match="dense-FFN"):
        to_hf(moe)
    windowed = from_hf(
        hf_model_2_layers.state_dict(), hf_model_2_layers.config, attention={"window": 64}
    )
    with pytest.warns(UserWarning, match="attends densely"):
        to_hf(windowed)
