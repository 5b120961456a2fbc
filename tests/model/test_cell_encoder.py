"""CellEncoder: order-free, padding-safe, mean-pooled embeddings; config and checkpoint errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wensu.checkpoint import load_cell_checkpoint, save_cell_checkpoint, save_encoder_checkpoint
from wensu.model import Encoder, EncoderConfig
from wensu.model.cell_encoder import (
    PAD_IDX,
    CellCheckpointError,
    CellEncoder,
    CellEncoderConfig,
    select_genes,
)
from wensu.model.config import ConfigError

VOCAB = [f"G{i}" for i in range(40)]


def _encoder(**overrides) -> CellEncoder:
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(VOCAB) + 5, num_bins=9, num_layers=2, d_model=32, num_heads=4)
    return CellEncoder(CellEncoderConfig(**{**cfg, "ffn_dim": 64, **overrides})).eval()


def _cell(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    genes = torch.randperm(len(VOCAB), generator=g)[:length] + 5
    return genes, torch.randint(1, 9, (length,), generator=g)


@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_gene_order_does_not_matter(backend):
    encoder = _encoder(attention={"backend": backend, "block_size": 4})
    genes, bins = _cell(11, 1)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = encoder(genes[None], bins[None])
        permuted = encoder(genes[perm][None], bins[perm][None])
        torch.testing.assert_close(permuted["hidden"][0], out["hidden"][0][perm])
        torch.testing.assert_close(permuted["bin_logits"][0], out["bin_logits"][0][perm])
        torch.testing.assert_close(
            encoder.cell_embedding(genes[perm][None], bins[perm][None]),
            encoder.cell_embedding(genes[None], bins[None]),
        )


def test_padding_and_batch_neighbours_do_not_leak():
    encoder = _encoder()
    short, long_ = _cell(5, 3), _cell(9, 4)
    genes = torch.full((2, 9), PAD_IDX)
    bins = torch.zeros(2, 9, dtype=torch.long)
    genes[0, :5], bins[0, :5] = short
    genes[1], bins[1] = long_
    with torch.no_grad():
        alone = encoder.cell_embedding(short[0][None], short[1][None])
        batched = encoder.cell_embedding(genes, bins)
        # Whatever sits at padded positions (here real gene ids and the mask bin) is ignored
        # when the padding mask says so.
        noisy_genes, noisy_bins = genes.clone(), bins.clone()
        noisy_genes[0, 5:], noisy_bins[0, 5:] = 7, 9
        mask = genes.eq(PAD_IDX)
        noisy = encoder.cell_embedding(noisy_genes, noisy_bins, mask)
    torch.testing.assert_close(batched[0], alone[0])
    torch.testing.assert_close(noisy, batched)


def test_embedding_is_the_mean_of_final_hidden_states_over_genes():
    encoder = _encoder()
    genes, bins = _cell(6, 5)
    padded_genes = torch.cat([genes, torch.full((3,), PAD_IDX)])[None]
    padded_bins = torch.cat([bins, torch.zeros(3, dtype=torch.long)])[None]
    with torch.no_grad():
        hidden = encoder(padded_genes, padded_bins)["hidden"][0, :6]
        embedding = encoder.cell_embedding(padded_genes, padded_bins)[0]
        layers = encoder.cell_embedding(padded_genes, padded_bins, all_layers=True)[0]
        x0 = encoder.gene_embed(genes) + encoder.bin_embed(bins)
    torch.testing.assert_close(embedding, hidden.mean(0))
    assert layers.shape == (3, 32)
    torch.testing.assert_close(layers[-1], embedding)
    torch.testing.assert_close(layers[0], x0.mean(0))


def test_select_genes_top_expressed_or_random_subset():
    genes = np.array([5, 6, 7, 8, 9, 10])
    bins = np.array([1, 4, 2, 4, 3, 1])
    top = select_genes(genes, bins, 3)
    assert top[0].tolist() == [6, 8, 9] and top[1].tolist() == [4, 4, 3]
    assert select_genes(genes, bins, 10)[0].tolist() == genes.tolist()
    first = select_genes(genes, bins, 4, np.random.default_rng(1))
    again = select_genes(genes, bins, 4, np.random.default_rng(1))
    assert first[0].tolist() == again[0].tolist() and len(first[0]) == 4
    assert np.all(np.diff(first[0]) > 0)  # stored order kept
    assert all(bins[genes == g][0] == b for g, b in zip(*first, strict=True))


def test_config_round_trip_and_clear_errors():
    cfg = CellEncoderConfig(vocab_size=45, num_layers=1, d_model=16, num_heads=2, ffn_dim=8)
    assert CellEncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        CellEncoderConfig(vocab_size=45, d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match=r"unknown cell model config field\(s\) \['colour'\]"):
        CellEncoderConfig.from_dict({"colour": 1})
    with pytest.raises(ConfigError, match="num_bins must be >= 2"):
        CellEncoderConfig(vocab_size=45, num_bins=1)
    with pytest.raises(ValueError, match="gene ids must be in"):
        _encoder()(torch.tensor([[80]]), torch.tensor([[1]]))


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    encoder = _encoder()
    path = save_cell_checkpoint(encoder, VOCAB, tmp_path / "cell.ckpt", {"note": "x"})
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["kind"] == "cells"
    loaded, vocab, info = load_cell_checkpoint(path)
    assert vocab == VOCAB and info["note"] == "x"
    genes, bins = _cell(7, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.cell_embedding(genes[None], bins[None]),
            encoder.cell_embedding(genes[None], bins[None]),
        )
    protein = save_encoder_checkpoint(
        Encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=8)),
        tmp_path / "protein.ckpt",
    )
    with pytest.raises(CellCheckpointError, match="protein.ckpt: a protein model checkpoint"):
        load_cell_checkpoint(protein)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CellCheckpointError, match="corrupt.ckpt: not a readable checkpoint"):
        load_cell_checkpoint(corrupt)
    with pytest.raises(CellCheckpointError, match="missing.ckpt: no such"):
        load_cell_checkpoint(tmp_path / "missing.ckpt")
    short = save_cell_checkpoint(encoder, VOCAB[:-1], tmp_path / "short.ckpt")
    with pytest.raises(CellCheckpointError, match="stores 39 genes"):
        load_cell_checkpoint(short)
