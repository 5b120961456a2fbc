"""The chunked LM head + cross-entropy equals the one-shot computation, in value and gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wensu.model import Encoder, EncoderConfig
from wensu.model.lm_loss import chunked_lm_loss


def _setup():
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=32)).double()
    hidden = torch.randn(53, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(4, 24, (53,))
    return model, hidden, targets


def test_chunked_loss_equals_full_logits_loss_and_gradients():
    model, hidden, targets = _setup()
    logits = model.lm_head(hidden, model.embed_tokens.weight)
    want = F.cross_entropy(logits, targets, reduction="sum")
    want_hits = (logits.argmax(-1) == targets).sum()
    want_grads = torch.autograd.grad(want, [hidden, *model.parameters()], allow_unused=True)

    got, hits = chunked_lm_loss(model, hidden, targets, chunk_tokens=8)
    got_grads = torch.autograd.grad(got, [hidden, *model.parameters()], allow_unused=True)

    torch.testing.assert_close(got, want)
    assert int(hits) == int(want_hits)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_backward_keeps_no_full_logits():
    """With chunks of 8 rows, nothing saved for backward has 53 x 33 logits' size."""
    model, hidden, targets = _setup()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        loss, _ = chunked_lm_loss(model, hidden, targets, chunk_tokens=8)
    assert max(saved) < 53 * 33
    loss.backward()
    assert hidden.grad is not None


def test_no_rows_gives_zero_loss():
    model, hidden, targets = _setup()
    loss, hits = chunked_lm_loss(model, hidden[:0], targets[:0])
    assert float(loss) == 0.0 and int(hits) == 0
