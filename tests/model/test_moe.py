"""MoEFeedForward against a per-token Python reference, plus gradients and the balancing loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wensu.model.moe import MoEFeedForward, expert_capacity


def reference_moe(moe: MoEFeedForward, x: torch.Tensor, padding_mask: torch.Tensor | None):
    """Token-by-token routing with capacity, written independently of the vectorised dispatch."""
    batch, length, d = x.shape
    positions = [
        (b, i)
        for b in range(batch)
        for i in range(length)
        if padding_mask is None or not padding_mask[b, i]
    ]
    num_tokens = len(positions)
    capacity = (
        num_tokens
        if moe.capacity_factor is None
        else math.ceil(moe.capacity_factor * num_tokens * moe.top_k / moe.num_experts)
    )
    routes = []
    for b, i in positions:
        probs = torch.softmax(x[b, i] @ moe.router.weight.T, dim=-1)
        top = sorted(range(moe.num_experts), key=lambda e: -probs[e].item())[: moe.top_k]
        chosen = torch.stack([probs[e] for e in top])
        gates = chosen / chosen.sum() if moe.top_k > 1 else chosen
        routes.append((top, gates))
    out = torch.zeros_like(x)
    load = [0] * moe.num_experts
    for rank in range(moe.top_k):
        for (b, i), (top, gates) in zip(positions, routes, strict=True):
            e = top[rank]
            if load[e] >= capacity:
                continue
            load[e] += 1
            hidden = F.gelu(x[b, i] @ moe.w1[e] + moe.b1[e])
            out[b, i] = out[b, i] + gates[rank] * (hidden @ moe.w2[e] + moe.b2[e])
    return out


def skewed_moe(seed: int, num_experts=4, top_k=2, capacity_factor=1.0, d=8, ffn=16):
    """A MoE whose router prefers expert 0, so capacity limits really drop tokens."""
    torch.manual_seed(seed)
    moe = MoEFeedForward(d, ffn, num_experts, top_k, capacity_factor)
    with torch.no_grad():
        moe.router.weight.mul_(3.0)
        moe.router.weight[0, 0] = 4.0
    return moe


def skewed_input(batch: int, length: int, d: int = 8) -> torch.Tensor:
    x = torch.randn(batch, length, d)
    x[..., 0] = x[..., 0].abs() + 0.5
    return x


@pytest.mark.parametrize("capacity_factor", [None, 1.25, 1.0, 0.5])
@pytest.mark.parametrize("top_k", [1, 2])
def test_matches_per_token_reference_with_padding(capacity_factor, top_k):
    moe = skewed_moe(0, top_k=top_k, capacity_factor=capacity_factor)
    x = skewed_input(3, 7)
    padding_mask = torch.zeros(3, 7, dtype=torch.bool)
    padding_mask[0, 5:] = True
    padding_mask[2, 2:] = True
    y, _ = moe(x, padding_mask)
    expected = reference_moe(moe, x, padding_mask)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert torch.all(y[padding_mask] == 0)
    if capacity_factor in (1.0, 0.5):
        assert moe.last_drop_fraction > 0  # the case really exercises capacity drops
    if capacity_factor is None:
        assert moe.last_drop_fraction == 0


def test_padding_is_neither_routed_nor_counted():
    moe = skewed_moe(1, capacity_factor=0.75)
    x = skewed_input(2, 6)
    padding_mask = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    y, aux = moe(x, padding_mask)
    packed = x[~padding_mask].unsqueeze(0)  # the same tokens in the same order, no padding
    y_packed, aux_packed = moe(packed)
    torch.testing.assert_close(y[~padding_mask], y_packed[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(aux, aux_packed)
    x_garbage = x.clone()
    x_garbage[padding_mask] = 100.0  # pad contents must not change anything
    y_garbage, aux_garbage = moe(x_garbage, padding_mask)
    torch.testing.assert_close(y_garbage, y)
    torch.testing.assert_close(aux_garbage, aux)


def test_capacity_formula():
    assert expert_capacity(10, 4, 2, 1.25) == math.ceil(1.25 * 10 * 2 / 4) == 7
    assert expert_capacity(10, 4, 2, None) == 10
    assert expert_capacity(3, 2, 2, 4.0) == 3  # never more than T: one slot per token per expert
    assert expert_capacity(0, 4, 2, 1.0) == 0


def test_all_padding_gives_zero_output():
    moe = MoEFeedForward(8, 16, 4, 2)
    y, aux = moe(torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))
    assert torch.all(y == 0) and aux.item() == 0.0


def test_gradients_reach_used_experts_and_router():
    torch.manual_seed(2)
    moe = MoEFeedForward(8, 16, num_experts=4, top_k=2, capacity_factor=None)
    with torch.no_grad():
        moe.router.weight[3, 0] = -50.0  # expert 3 is never chosen for inputs with x[..., 0] > 0.5
    x = skewed_input(2, 9).requires_grad_(True)
    y, aux = moe(x)
    (y.pow(2).sum() + aux).backward()
    probs = torch.softmax(x.detach() @ moe.router.weight.T, dim=-1)
    used = set(probs.topk(2, dim=-1).indices.unique().tolist())
    assert used == {0, 1, 2}
    for e in range(4):
        grads = [p.grad[e].abs().sum().item() for p in (moe.w1, moe.b1, moe.w2, moe.b2)]
        if e in used:
            assert all(g > 0 for g in grads), (e, grads)
        else:
            assert all(g == 0 for g in grads), (e, grads)
    assert moe.router.weight.grad[:3].abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_router_gets_task_gradient_with_top1():
    torch.manual_seed(3)
    moe = MoEFeedForward(8, 16, num_experts=4, top_k=1, capacity_factor=None)
    y, _ = moe(torch.randn(1, 5, 8))
    y.sum().backward()  # aux loss left out: the gate itself must carry router gradient
    assert moe.router.weight.grad.abs().sum() > 0


def test_load_balancing_loss_uniform_router_is_one():
    moe = MoEFeedForward(4, 8, num_experts=4, top_k=2)
    with torch.no_grad():
        moe.router.weight.zero_()
    _, aux = moe(torch.randn(2, 5, 4))
    assert aux.item() == pytest.approx(1.0, abs=1e-6)


def test_load_balancing_loss_hand_computed_top1():
    # Router logits (x_0, 0): x_0 = ln3 -> p = (3/4, 1/4) -> expert 0; x_0 = -ln3 -> expert 1.
    moe = MoEFeedForward(2, 4, num_experts=2, top_k=1, capacity_factor=None)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    ln3 = math.log(3.0)
    x = torch.tensor([[[ln3, 0.0], [-ln3, 0.0], [ln3, 0.0], [30.0, 0.0]]])
    padding_mask = torch.tensor([[False, False, False, True]])  # the pad would skew it to expert 0
    _, aux = moe(x, padding_mask)
    # f = (2/3, 1/3); P = ((3/4+1/4+3/4)/3, (1/4+3/4+1/4)/3) = (7/12, 5/12)
    expected = 2 * (2 / 3 * 7 / 12 + 1 / 3 * 5 / 12)
    assert expected == pytest.approx(19 / 18)
    assert aux.item() == pytest.approx(expected, rel=1e-6)


def test_load_balancing_loss_hand_computed_top2():
    # 3 experts, logits (x_0, x_1, 0). Token a: (ln4, ln2, 0) -> p = (4, 2, 1)/7, picks {0, 1}.
    # Token b: (-ln4, -ln2, 0) -> p = (1/4, 1/2, 1)/(7/4) = (1, 2, 4)/7, picks {2, 1}.
    moe = MoEFeedForward(2, 4, num_experts=3, top_k=2, capacity_factor=None)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    ln2, ln4 = math.log(2.0), math.log(4.0)
    x = torch.tensor([[[ln4, ln2], [-ln4, -ln2]]])
    _, aux = moe(x)
    # slots: a -> {0, 1}, b -> {2, 1}: f = (1/4, 2/4, 1/4); P = ((4+1)/14, (2+2)/14, (1+4)/14)
    expected = 3 * (1 / 4 * 5 / 14 + 2 / 4 * 4 / 14 + 1 / 4 * 5 / 14)
    assert aux.item() == pytest.approx(expected, rel=1e-6)


def test_load_balancing_loss_collapsed_router_approaches_num_experts():
    moe = MoEFeedForward(2, 4, num_experts=4, top_k=1, capacity_factor=None)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = 50.0
    _, aux = moe(torch.tensor([[[1.0, 0.0], [2.0, 0.0], [1.5, 0.0]]]))
    assert aux.item() == pytest.approx(4.0, rel=1e-6)


def test_aux_loss_gradient_flows_to_router():
    torch.manual_seed(4)
    moe = MoEFeedForward(8, 16, num_experts=4, top_k=2)
    _, aux = moe(torch.randn(2, 6, 8))
    aux.backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert moe.w1.grad is None or moe.w1.grad.abs().sum() == 0


def test_gate_renormalisation_and_invalid_arguments():
    torch.manual_seed(5)
    moe = MoEFeedForward(8, 16, num_experts=4, top_k=2)
    _, gates, _ = moe.route(torch.randn(10, 8))
    torch.testing.assert_close(gates.sum(-1), torch.ones(10))
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(8, 16, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoEFeedForward(8, 16, capacity_factor=0.0)


def test_encoder_with_moe_ffn_reports_weighted_aux_loss_that_backpropagates():
    from wensu.model import Encoder, EncoderConfig

    torch.manual_seed(6)
    cfg = EncoderConfig(
        num_layers=2,
        d_model=32,
        num_heads=4,
        ffn_dim=64,
        ffn="moe",
        moe_num_experts=4,
        moe_top_k=2,
        moe_capacity_factor=1.25,
        moe_aux_loss_weight=0.5,
    )
    encoder = Encoder(cfg)
    assert all(isinstance(layer.ffn, MoEFeedForward) for layer in encoder.layers)
    per_layer = []
    for layer in encoder.layers:
        layer.ffn.register_forward_hook(lambda module, inputs, output: per_layer.append(output[1]))
    tokens = torch.tensor([[0, 5, 6, 7, 8, 9, 2], [0, 10, 11, 12, 2, 1, 1]])
    out = encoder(tokens)
    aux = out["aux_loss"]
    assert aux.item() > 0
    torch.testing.assert_close(aux, 0.5 * (per_layer[0] + per_layer[1]))
    aux.backward()
    for layer in encoder.layers:
        assert layer.ffn.router.weight.grad.abs().sum() > 0
    encoder.zero_grad()
    out = encoder(tokens)
    (out["logits"].square().mean() + out["aux_loss"]).backward()
    for layer in encoder.layers:
        assert layer.ffn.w1.grad.abs().sum() > 0 and layer.ffn.w2.grad.abs().sum() > 0
