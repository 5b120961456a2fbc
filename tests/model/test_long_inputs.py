"""Long inputs: the chunked path never builds an L x L tensor and its memory grows linearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wensu.model import Encoder, EncoderConfig

TINY = dict(num_layers=2, d_model=64, num_heads=4, ffn_dim=256)
WINDOW = {"backend": "chunked", "window": 128, "num_global": 1, "block_size": 128}


class LargestTensor(TorchDispatchMode):
    """Records the largest storage (bytes) produced by any aten op while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.untyped_storage().nbytes())
        return out


def _tokens(seq_len: int) -> torch.Tensor:
    tokens = torch.randint(4, 24, (1, seq_len), generator=torch.Generator().manual_seed(0))
    tokens[0, 0], tokens[0, -1] = 0, 2
    return tokens


def _largest_tensor(model: Encoder, seq_len: int, train: bool) -> int:
    tokens = _tokens(seq_len)
    with LargestTensor() as tracker:
        if train:
            model(tokens)["logits"].float().logsumexp(-1).mean().backward()
        else:
            with torch.no_grad():
                model(tokens)
    return tracker.largest


@pytest.mark.parametrize("train", [False, True])
def test_chunked_largest_tensor_grows_linearly(train):
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(**TINY, attention=WINDOW))
    small, large = _largest_tensor(model, 512, train), _largest_tensor(model, 2048, train)
    assert large < 4.5 * small
    assert large < 2048 * 2048 * 4  # smaller than one head's L x L float32 score matrix


def test_dense_largest_tensor_grows_quadratically():
    """The contrast that shows the tracker sees an L x L tensor when there is one."""
    torch.manual_seed(0)
    dense = Encoder(EncoderConfig(**TINY, attention={**WINDOW, "backend": "dense"}))
    small, large = _largest_tensor(dense, 512, False), _largest_tensor(dense, 2048, False)
    assert large >= 14 * small and large >= 2048 * 2048


# Runs in a fresh interpreter: peak resident memory (VmHWM, reset through clear_refs) of a
# 100k-residue forward pass against a 25k one. A fixed mmap threshold makes glibc return
# freed tensors to the OS, so resident memory follows live tensors.
_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, re, sys, torch
    from wensu.model import Encoder, EncoderConfig

    def status(field):
        text = open("/proc/self/status").read()
        return int(re.search(field + r":\\s+(\\d+)", text).group(1)) * 1024

    torch.manual_seed(0)
    tiny, window = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    model = Encoder(EncoderConfig(**tiny, attention=window)).eval()
    result = {}
    for residues in (25_000, 100_000):
        tokens = torch.randint(4, 24, (1, residues + 2))
        tokens[0, 0], tokens[0, -1] = 0, 2
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = status("VmRSS")
        with torch.inference_mode():
            out = model(tokens, repr_layers=[-1])
        peak = status("VmHWM") - before
        result[residues] = {
            "peak_bytes": peak,
            "finite": bool(torch.isfinite(out["logits"]).all()),
            "shape": list(out["representations"][-1].shape),
        }
        del out
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_100k_residue_inference_memory_is_linear():
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-RSS counter")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    completed = subprocess.run(
        [sys.executable, "-P", "-c", _PEAK_SCRIPT, json.dumps(TINY), json.dumps(WINDOW)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    short, long = result["25000"], result["100000"]
    assert long["finite"] and long["shape"] == [1, 100_002, 64]
    assert long["peak_bytes"] < 6 * short["peak_bytes"]
    # One L x L float32 score matrix per head would be 40 GB per head at this length.
    assert long["peak_bytes"] < 2 * 1024**3


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_bf16_autocast_forward_on_cpu(backend):
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(**TINY, attention={**WINDOW, "backend": backend})).eval()
    tokens = torch.cat([_tokens(300), _tokens(300)])
    tokens[1, 200:] = 1
    with torch.no_grad():
        full = model(tokens)["logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(tokens)["logits"]
    assert half.dtype == torch.float32  # the tied LM head runs under autocast then adds bias
    assert torch.isfinite(half).all()
    assert (half - full).abs().max() < 0.05 * full.abs().max()
