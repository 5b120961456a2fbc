"""A checkpoint that pickles code is refused by every reader, runs nothing, and the message
never suggests loading it with weights_only=False."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import wensu.checkpoint as checkpoint
from wensu.interop import load_esm2


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize(
    "reader",
    [
        checkpoint.load,
        checkpoint.read_model_config,
        checkpoint.read_cell_checkpoint,
        checkpoint.load_cell_checkpoint,
        load_esm2,
    ],
)
def test_unsafe_checkpoint_is_refused_without_weights_only_false_advice(evil, reader):
    path, marker = evil
    with pytest.raises(ValueError) as caught:
        reader(path)
    message = str(caught.value)
    assert str(path) in message and "posix.system" in message and "\n" not in message
    assert "weights_only=False" not in message and "`False`" not in message
    assert not marker.exists()
