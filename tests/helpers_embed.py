"""Shared helpers for the wensu.embed tests: real records, a tiny encoder, references."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wensu.alphabet import get_alphabet
from wensu.data.fasta import parse_header
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
from wensu.resources import default_fasta

ALL_KINDS = ["mean", "per_residue", "cls"]


def real_records(count: int, max_length: int = 300) -> list[tuple[str, str]]:
    """The first ``count`` E. coli proteins of at most ``max_length`` residues (embedded sample)."""
    records: list[tuple[str, str]] = []
    with gzip.open(default_fasta(), "rt") as handle:
        header, parts = None, []
        for line in handle:
            if line.startswith(">"):
                if header is not None and len("".join(parts)) <= max_length:
                    records.append((header, "".join(parts)))
                if len(records) == count:
                    break
                header, parts = parse_header(line[1:].strip()).id, []
            else:
                parts.append(line.strip())
    return records


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{rid} some description\n{seq}\n" for rid, seq in records))
    return path


# Fixtures shared by the test_embed_* modules (imported there by name, as pytest finds them).
@pytest.fixture(scope="module")
def records() -> list[tuple[str, str]]:
    """Eight real E. coli proteins (at most 300 residues)."""
    return real_records(8)


@pytest.fixture()
def fasta(tmp_path: Path, records: list[tuple[str, str]]) -> Path:
    """``records`` written to a FASTA file in the test's temporary directory."""
    return write_fasta(tmp_path / "proteins.fasta", records)


def tiny_encoder(seed: int = 0, ffn: str = "dense", **attention) -> Encoder:
    torch.manual_seed(seed)
    cfg = EncoderConfig(
        num_layers=2,
        d_model=32,
        num_heads=4,
        ffn_dim=64,
        ffn=ffn,
        moe_num_experts=4,
        moe_capacity_factor=0.5,
        attention=attention,
    )
    return Encoder(cfg).eval()


def direct(encoder: Encoder, sequence: str, layers=(0, 2)) -> dict[int, np.ndarray]:
    """Reference: one sequence alone through Encoder.forward, specials stripped."""
    tokens = torch.from_numpy(get_alphabet().encode(sequence))[None]
    with torch.no_grad():
        out = encoder(tokens, repr_layers=list(layers))
    return {layer: out["representations"][layer][0, 1:-1].numpy() for layer in layers}


def h5_bytes(path: Path) -> dict[str, bytes]:
    """Every dataset of a file as raw bytes, keyed by its path."""
    found: dict[str, bytes] = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()].tobytes())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return found
