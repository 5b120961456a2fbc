"""Encoder: ESM-2 numerics (against Hugging Face EsmForMaskedLM), outputs, config, Hydra."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from wensu.model import AttentionConfig, ConfigError, Encoder, EncoderConfig, build_encoder
from wensu.model.encoder import MASK_RATIO_TRAIN
from wensu.model.rotary import apply_rotary, rotary_tables

TINY = dict(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)


def _tokens() -> torch.Tensor:
    """A padded batch in ESM-2 layout: <cls> residues <eos> <pad>..., some <mask> tokens."""
    tokens = torch.randint(4, 24, (3, 40), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    tokens[0, -1] = 2
    tokens[1, 30], tokens[1, 31:] = 2, 1
    tokens[2, 10:15] = 32
    tokens[2, 20], tokens[2, 21:] = 2, 1
    return tokens


def _model(**overrides) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(**{**TINY, **overrides})).eval()


def _hf_state_dict(model: Encoder) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face EsmForMaskedLM names (written out independently here)."""
    names = {"embed_tokens.weight": "esm.embeddings.word_embeddings.weight"}
    layer_names = {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "self_attn_layer_norm": "attention.LayerNorm",
        "ffn.fc1": "intermediate.dense",
        "ffn.fc2": "output.dense",
        "final_layer_norm": "LayerNorm",
    }
    for i in range(model.num_layers):
        for ours, theirs in layer_names.items():
            for kind in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{kind}"] = f"esm.encoder.layer.{i}.{theirs}.{kind}"
    for kind in ("weight", "bias"):
        names[f"emb_layer_norm_after.{kind}"] = f"esm.encoder.emb_layer_norm_after.{kind}"
        names[f"lm_head.dense.{kind}"] = f"lm_head.dense.{kind}"
        names[f"lm_head.layer_norm.{kind}"] = f"lm_head.layer_norm.{kind}"
    names["lm_head.bias"] = "lm_head.bias"
    return {names[name]: tensor for name, tensor in model.state_dict().items()}


def _hf_reference(model: Encoder):
    """A Hugging Face EsmForMaskedLM holding the same weights as `model` (tiny shape)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.EsmConfig(
        vocab_size=33,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        token_dropout=True,
        mask_token_id=32,
        pad_token_id=1,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    reference = transformers.EsmForMaskedLM(config).eval()
    missing, unexpected = reference.load_state_dict(_hf_state_dict(model), strict=False)
    assert not unexpected
    assert all("contact_head" in k or "inv_freq" in k or "decoder" in k for k in missing)
    return reference


def test_logits_match_hugging_face_esm():
    model = _model()
    reference = _hf_reference(model)
    tokens = _tokens()
    with torch.no_grad():
        ours = model(tokens, repr_layers=[-1])
        theirs = reference(
            input_ids=tokens, attention_mask=tokens.ne(1).long(), output_hidden_states=True
        )
    torch.testing.assert_close(ours["logits"], theirs.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours["representations"][-1], theirs.hidden_states[-1], atol=1e-5, rtol=1e-5
    )


def test_explicit_rotary_frequencies_reproduce_float16_rounded_checkpoints():
    model = _model(init_std=0.5)  # large weights: sharp attention, so positions matter
    reference = _hf_reference(model)
    with torch.no_grad():
        inv_freq = reference.esm.rotary_embeddings.inv_freq
        inv_freq.copy_(inv_freq.half().float())  # what published ESM-2 checkpoints carry
    tokens = _tokens()
    with torch.no_grad():
        expected = reference(input_ids=tokens, attention_mask=tokens.ne(1).long()).logits
        default = model(tokens)["logits"]
        model.cfg.rotary_inv_freq = inv_freq.tolist()
        explicit = model(tokens)["logits"]
    assert (default - expected).abs().max() > 1e-3  # the rounding is visible in the logits
    # Sharp attention (init_std=0.5) amplifies float32 noise: transformers 5 computes its rotary
    # table along another path (~2e-5 apart), still 1000x closer than without the rounding.
    torch.testing.assert_close(explicit, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="rotary_inv_freq must be a list of head_dim/2 = 4"):
        EncoderConfig(**TINY, rotary_inv_freq=[1.0, 0.1])


def test_token_dropout_rescales_embeddings_as_esm2():
    model = _model()
    tokens = _tokens()
    embedded = model(tokens, repr_layers=[0], return_logits=False)["representations"][0]
    raw = model.embed_tokens(tokens)
    is_pad, is_mask = tokens.eq(1), tokens.eq(32)
    for row in range(tokens.shape[0]):
        observed = is_mask[row].sum().item() / (~is_pad[row]).sum().item()
        scale = (1 - MASK_RATIO_TRAIN) / (1 - observed)
        expected = raw[row] * scale * (~is_mask[row] & ~is_pad[row]).unsqueeze(-1)
        torch.testing.assert_close(embedded[row], expected)
    off = _model(token_dropout=False)(tokens, repr_layers=[0])["representations"][0]
    torch.testing.assert_close(off, model.embed_tokens(tokens) * ~is_pad.unsqueeze(-1))


def test_representation_indices_and_errors():
    model = _model()
    tokens = _tokens()
    out = model(tokens, repr_layers=[0, 1, -1, -3])
    reps = out["representations"]
    assert set(reps) == {0, 1, -1, -3}
    torch.testing.assert_close(reps[-3], reps[0])
    padding = tokens.eq(1)
    attention = model.attention_backend.prepare(padding, 40, tokens.device)
    after_first, _, _ = model.layers[0](reps[0], rotary_tables(40, 8), attention, padding)
    torch.testing.assert_close(after_first, reps[1])
    after_second, _, _ = model.layers[1](after_first, rotary_tables(40, 8), attention, padding)
    torch.testing.assert_close(model.emb_layer_norm_after(after_second), reps[-1])
    logits = model.lm_head(reps[-1], model.embed_tokens.weight)
    torch.testing.assert_close(out["logits"], logits)
    with pytest.raises(ValueError, match="repr_layers index 3 is out of range"):
        model(tokens, repr_layers=[3])
    with pytest.raises(ValueError, match="tokens must be"):
        model(tokens[0])


def test_logits_of_a_sequence_do_not_depend_on_batch_padding():
    for attention in ({"backend": "dense"}, {"backend": "chunked", "window": 5, "block_size": 8}):
        model = _model(attention=attention)
        tokens = _tokens()
        batch = model(tokens)["logits"]
        alone = model(tokens[1:2, :31])["logits"]
        torch.testing.assert_close(batch[1:2, :31], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_attention_maps_are_the_softmax_of_the_pattern(window):
    model = _model(attention={"backend": "chunked", "window": window, "num_global": 1})
    tokens = _tokens()
    out = model(tokens, need_attn=True)
    maps = out["attentions"]
    assert maps.shape == (3, 2, 4, 40, 40)
    torch.testing.assert_close(out["logits"], model(tokens)["logits"], atol=1e-5, rtol=1e-5)
    real = tokens.ne(1)
    row_sums = maps.sum(-1)
    expected = real[:, None, None, :].to(row_sums.dtype).expand_as(row_sums)
    torch.testing.assert_close(row_sums, expected)
    outside = ~model.pattern.dense_mask(40, tokens.eq(1))[:, None]
    assert maps.masked_select(outside.expand_as(maps)).abs().max() == 0
    # First layer, recomputed by hand from the same weights.
    layer = model.layers[0]
    embedded = model(tokens, repr_layers=[0])["representations"][0]
    x = layer.self_attn_layer_norm(embedded)
    attn = layer.self_attn
    q = attn.q_proj(x).view(3, 40, 4, 8).transpose(1, 2) * 8**-0.5
    k = attn.k_proj(x).view(3, 40, 4, 8).transpose(1, 2)
    cos, sin = rotary_tables(40, 8)
    scores = apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2)
    mask = model.pattern.dense_mask(40, tokens.eq(1))
    probs = torch.softmax(scores.masked_fill(~mask, -math.inf), -1) * real[:, None, :, None]
    torch.testing.assert_close(maps[:, 0], probs, atol=1e-6, rtol=1e-5)


def test_dense_ffn_has_zero_aux_loss():
    out = _model()(_tokens())
    assert out["aux_loss"].shape == () and out["aux_loss"].item() == 0.0


def test_moe_aux_loss_is_weighted_sum_over_layers():
    pytest.importorskip("wensu.model.moe")
    model = _model(ffn="moe", moe_num_experts=4, moe_top_k=2, moe_aux_loss_weight=0.5)
    captured = []
    for layer in model.layers:
        layer.ffn.register_forward_hook(lambda module, args, output: captured.append(output[1]))
    out = model(_tokens())
    assert len(captured) == 2
    torch.testing.assert_close(out["aux_loss"], 0.5 * (captured[0] + captured[1]))


def test_activation_checkpointing_gives_identical_gradients():
    tokens = _tokens()
    results = []
    for checkpointing in (False, True):
        model = _model(
            activation_checkpointing=checkpointing,
            attention={"backend": "chunked", "window": 4, "block_size": 8},
        ).train()
        loss = model(tokens)["logits"].square().mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


def test_dropout_is_active_only_in_training():
    model = _model(dropout=0.3, attention_dropout=0.2)
    tokens = _tokens()
    eval_a, eval_b = model(tokens)["logits"], model(tokens)["logits"]
    torch.testing.assert_close(eval_a, eval_b)
    model.train()
    assert not torch.allclose(model(tokens)["logits"], model(tokens)["logits"])


def test_parameter_names_follow_fair_esm():
    names = set(dict(_model().named_parameters()))
    expected = {
        "embed_tokens.weight",
        "layers.0.self_attn_layer_norm.weight",
        "layers.0.self_attn.q_proj.weight",
        "layers.0.self_attn.out_proj.bias",
        "layers.1.final_layer_norm.bias",
        "layers.1.ffn.fc1.weight",
        "layers.1.ffn.fc2.bias",
        "emb_layer_norm_after.weight",
        "lm_head.dense.weight",
        "lm_head.layer_norm.bias",
        "lm_head.bias",
    }
    assert expected <= names
    assert not any("rot" in name or "inv_freq" in name for name in _model().state_dict())


def test_config_round_trips_through_plain_dicts():
    cfg = EncoderConfig(**TINY, attention={"backend": "chunked", "window": 8})
    plain = cfg.to_dict()
    assert plain["attention"] == {
        "backend": "chunked",
        "window": 8,
        "num_global": 1,
        "block_size": 128,
    }
    assert EncoderConfig.from_dict(plain) == cfg
    assert isinstance(EncoderConfig.from_dict(plain).attention, AttentionConfig)
    assert EncoderConfig.from_dict({}) == EncoderConfig()


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"d_model": 30, "num_heads": 4}, r"d_model \(30\) must be divisible by num_heads \(4\)"),
        ({"d_model": 36, "num_heads": 4}, "must be even"),
        ({"attention": {"window": -1}}, "attention.window must be >= 0"),
        ({"attention": {"backend": "sparse"}}, "attention.backend 'sparse' is unknown"),
        ({"attention": {"windw": 3}}, r"unknown attention config field\(s\) \['windw'\]"),
        ({"ffn": "mixture"}, "ffn 'mixture' is unknown"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0.0, 1.0\)"),
        ({"num_layers": "six"}, "num_layers must be an integer"),
        ({"moe_top_k": 9}, "moe_top_k"),
        ({"layers": 6}, r"unknown model config field\(s\) \['layers'\]"),
        ({"attention": {"backend": "flex"}, "attention_dropout": 0.1}, "no attention dropout"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        EncoderConfig.from_dict({**TINY, **overrides}, source="conf/model/broken.yaml")
    assert "conf/model/broken.yaml" in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("attention", ["dense", "chunked", "flex"])
def test_hydra_groups_compose_into_a_model(attention):
    hydra = pytest.importorskip("hydra")
    with hydra.initialize_config_module(config_module="wensu.conf", version_base="1.3"):
        cfg = hydra.compose(overrides=["+model=tiny", f"+attention@model.attention={attention}"])
    model = build_encoder(OmegaConf.to_container(cfg.model, resolve=True))
    assert model.cfg.attention.backend == attention
    assert model.attention_backend.name == attention
    assert model.cfg.num_layers == 2 and model.cfg.d_model == 64
    if attention != "flex":  # flex on CPU compiles a kernel first; see test_attention.py
        assert torch.isfinite(model(_tokens())["logits"]).all()
