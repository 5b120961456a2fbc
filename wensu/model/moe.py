"""Mixture-of-experts feed-forward block (top-k token routing with expert capacity).

Routing, for the T non-padding tokens of a batch (padding is never routed and never counted):

* router probabilities ``p = softmax(x @ W_router^T)`` over the ``E`` experts, in float32;
* each token picks its ``top_k`` most probable experts; with ``top_k > 1`` the chosen gate
  weights are renormalised to sum to 1 over the chosen experts (``g_i = p_i / sum_chosen p``);
  with ``top_k == 1`` the gate is the raw probability ``p_i`` (Switch Transformer), because a
  renormalised single gate would always be 1 and the router would get no gradient from the task;
* every expert accepts at most ``capacity = min(T, ceil(capacity_factor * T * top_k / E))``
  token-slots (``capacity_factor=None``: no limit, nothing is dropped). Slots are served in
  priority order "all first choices, then all second choices, ...", and within a choice rank in
  token order (row-major over ``[B, L]``), as in GShard. A slot over capacity is dropped: that
  expert contributes zero for that token and the remaining gates are *not* renormalised, so a
  token whose every slot was dropped gets a zero output (the residual connection carries it);
* output ``y_t = sum_{kept slots i} g_i * expert_i(x_t)``, with
  ``expert_e(x) = gelu(x @ w1[e] + b1[e]) @ w2[e] + b2[e]`` (exact erf GELU, like the dense FFN;
  dropout acts on the hidden activation). Padding positions get a zero output.

The capacity depends on the number of non-padding tokens, so the output of one token can depend
on the other tokens of the batch (as for every capacity-limited MoE); use
``capacity_factor=None`` where batch-independent outputs matter (e.g. embedding extraction).

Auxiliary load-balancing loss (Switch Transformer / GShard), returned unweighted::

    aux_loss = E * sum_e f_e * P_e
    f_e = (routed token-slots choosing expert e, counted before capacity drops) / (T * top_k)
    P_e = (1 / T) * sum_t p_{t,e}          (mean router probability over non-padding tokens)

It equals 1.0 when routing is perfectly balanced (or the router is uniform) and approaches ``E``
when every token goes to one expert. Only ``P_e`` carries gradient (``f_e`` is a count).

Dispatch is vectorised: a stable sort by expert gives each slot its position in its expert's
buffer, tokens are scattered into an ``[E, capacity, d]`` buffer, all experts run as one batched
matmul, and results are gathered back with ``index_add``. Expert weights are stacked tensors
(``w1 [E, d, ffn]``, ``b1 [E, ffn]``, ``w2 [E, ffn, d]``, ``b2 [E, d]``) so they can be sharded
along the expert dimension.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


def expert_capacity(
    num_tokens: int, num_experts: int, top_k: int, capacity_factor: float | None
) -> int:
    """Token-slots one expert accepts: ``min(T, ceil(capacity_factor * T * top_k / E))``.

    ``capacity_factor=None`` means unlimited (``T``: an expert can never receive a token twice).
    """
    if capacity_factor is None:
        return num_tokens
    return min(num_tokens, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def load_balancing_loss(router_probs: torch.Tensor, expert_choice: torch.Tensor) -> torch.Tensor:
    """``E * sum_e f_e * P_e`` for probabilities ``[T, E]`` and chosen experts ``[T, top_k]``."""
    num_experts = router_probs.shape[-1]
    slot_counts = torch.bincount(expert_choice.reshape(-1), minlength=num_experts)
    fraction = slot_counts.to(router_probs.dtype) / expert_choice.numel()
    mean_prob = router_probs.mean(dim=0)
    return num_experts * (fraction * mean_prob).sum()


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of ``num_experts`` GELU feed-forward experts (see module docstring).

    Args:
        d_model: model width ``d``.
        ffn_dim: hidden width of each expert.
        num_experts: number of experts ``E``.
        top_k: experts per token (``1 <= top_k <= E``).
        capacity_factor: expert capacity multiplier; ``None`` disables capacity limits.
        dropout: dropout probability on the experts' hidden activations.
    """

    def __init__(
        self,
        d_model: int,
        ffn_dim: int,
        num_experts: int = 8,
        top_k: int = 2,
        capacity_factor: float | None = 1.25,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {capacity_factor}")
        self.d_model = d_model
        self.ffn_dim = ffn_dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(num_experts, d_model, ffn_dim))
        self.b1 = nn.Parameter(torch.empty(num_experts, ffn_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, ffn_dim, d_model))
        self.b2 = nn.Parameter(torch.empty(num_experts, d_model))
        self.dropout = nn.Dropout(dropout)
        # Fraction of routed token-slots dropped by capacity in the last forward (for logging).
        self.last_drop_fraction: float | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise each expert like a ``nn.Linear`` pair (uniform in ±1/sqrt(fan_in))."""
        self.router.reset_parameters()
        for weight, bias, fan_in in (
            (self.w1, self.b1, self.d_model),
            (self.w2, self.b2, self.ffn_dim),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, ffn_dim={self.ffn_dim}, num_experts={self.num_experts}, "
            f"top_k={self.top_k}, capacity_factor={self.capacity_factor}"
        )

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities ``[T, E]`` (float32), gates and chosen experts (``[T, k]``)."""
        probs = self.router(tokens).float().softmax(dim=-1)
        gates, choice = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return probs, gates, choice

    def experts(self, buffer: torch.Tensor) -> torch.Tensor:
        """Apply expert ``e`` to ``buffer[e]`` for all experts at once (``[E, C, d]``)."""
        hidden = F.gelu(torch.baddbmm(self.b1.unsqueeze(1), buffer, self.w1))
        return torch.baddbmm(self.b2.unsqueeze(1), self.dropout(hidden), self.w2)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Route ``x [B, L, d]``; ``padding_mask [B, L]`` is True at padding.

        Returns ``(y [B, L, d], aux_loss)`` with the unweighted load-balancing loss (a scalar).
        """
        batch, length, _ = x.shape
        flat = rearrange(x, "b l d -> (b l) d")
        if padding_mask is None:
            token_index = torch.arange(batch * length, device=x.device)
        else:
            token_index = torch.nonzero(~padding_mask.reshape(-1)).squeeze(1)
        tokens = flat.index_select(0, token_index)
        num_tokens = tokens.shape[0]
        capacity = expert_capacity(num_tokens, self.num_experts, self.top_k, self.capacity_factor)
        if num_tokens == 0:
            self.last_drop_fraction = 0.0
            return torch.zeros_like(x), x.new_zeros((), dtype=torch.float32)

        probs, gates, choice = self.route(tokens)
        aux_loss = load_balancing_loss(probs, choice)

        # Slots in priority order: rank-major (all first choices first), token order within a rank.
        slot_expert = rearrange(choice, "t k -> (k t)")
        slot_gate = rearrange(gates, "t k -> (k t)")
        slot_token = repeat(torch.arange(num_tokens, device=x.device), "t -> (k t)", k=self.top_k)
        order = torch.argsort(slot_expert, stable=True)
        counts = torch.bincount(slot_expert, minlength=self.num_experts)
        first_slot_of_expert = counts.cumsum(0) - counts
        position = torch.empty_like(slot_expert)
        position[order] = (
            torch.arange(slot_expert.numel(), device=x.device)
            - first_slot_of_expert[slot_expert[order]]
        )
        kept = torch.nonzero(position < capacity).squeeze(1)
        self.last_drop_fraction = 1.0 - kept.numel() / slot_expert.numel()

        buffer_index = slot_expert[kept] * capacity + position[kept]
        kept_token = slot_token[kept]
        buffer = tokens.new_zeros(self.num_experts * capacity, tokens.shape[-1])
        buffer = buffer.index_copy(0, buffer_index, tokens.index_select(0, kept_token))
        expert_out = self.experts(rearrange(buffer, "(e c) d -> e c d", e=self.num_experts))
        expert_out = rearrange(expert_out, "e c d -> (e c) d").index_select(0, buffer_index)
        weighted = expert_out * slot_gate[kept].unsqueeze(1).to(expert_out.dtype)
        out = expert_out.new_zeros(batch * length, expert_out.shape[-1])
        out = out.index_add(0, token_index.index_select(0, kept_token), weighted)
        return rearrange(out, "(b l) d -> b l d", b=batch), aux_loss


@contextlib.contextmanager
def unlimited_expert_capacity(model: nn.Module) -> Iterator[None]:
    """Lift MoE capacity limits in ``model``: a row's output never depends on its batch-mates."""
    experts = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    saved = [m.capacity_factor for m in experts]
    for module in experts:
        module.capacity_factor = None
    try:
        yield
    finally:
        for module, factor in zip(experts, saved, strict=True):
            module.capacity_factor = factor
