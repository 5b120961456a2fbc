"""Interpretability probe: logit lens vs the forward pass, per-head P@L vs a manual computation,
embedding-map scores vs scikit-learn, FASTA input errors, and ``wensu-eval probe=interpret``."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import require_shared
from helpers_probe_cli import probe_cli_args, run_eval, tiny_checkpoint
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.context import stable_subset
from wensu.probes.interpret.attention_heads import best_heads, head_maps, head_precisions
from wensu.probes.interpret.data import ORGANISM, organism_of, read_proteins
from wensu.probes.interpret.embedding_map import knn_accuracy, label_silhouette, project_2d
from wensu.probes.interpret.logit_lens import layer_logits, logit_lens, mask_positions

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVDAFQLGNV", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(7)
    return Encoder(EncoderConfig(num_layers=3, d_model=16, num_heads=2, ffn_dim=32)).eval()


def test_layer_logits_apply_final_norm_and_head(encoder):
    alphabet = get_alphabet()
    tokens = torch.from_numpy(alphabet.batch_encode(SEQUENCES))
    lens = layer_logits(encoder, tokens)
    with torch.inference_mode():
        out = encoder(tokens, repr_layers=[1])
        manual = encoder.lm_head(
            encoder.emb_layer_norm_after(out["representations"][1]), encoder.embed_tokens.weight
        )
    assert lens.shape == (4, 3, tokens.shape[1], 33)
    torch.testing.assert_close(lens[-1], out["logits"])
    torch.testing.assert_close(lens[1], manual)


def test_logit_lens_last_layer_matches_forward_logits(encoder):
    alphabet = get_alphabet()
    summary, profiles = logit_lens(encoder, alphabet, SEQUENCES, mask_rate=0.15, seed=3)
    entropies, hits, masked_hits, masked = [], [], [], 0
    generator = torch.Generator().manual_seed(3)
    positions = [mask_positions(len(s), 0.15, generator) for s in SEQUENCES]
    for sequence, at in zip(SEQUENCES, positions, strict=True):
        tokens = torch.from_numpy(alphabet.encode(sequence))[None]
        with torch.inference_mode():
            logits = encoder(tokens)["logits"][0, 1:-1]
            p = torch.softmax(logits, -1)
            entropies.append(-(p * p.log()).sum(-1))
            hits.append(logits.argmax(-1) == tokens[0, 1:-1])
            masked_tokens = tokens.clone()
            masked_tokens[0, at + 1] = alphabet.mask_idx
            masked_logits = encoder(masked_tokens)["logits"][0, at + 1]
        masked_hits.append(masked_logits.argmax(-1) == tokens[0, at + 1])
        masked += len(at)
    assert summary["entropy"][-1] == pytest.approx(float(torch.cat(entropies).mean()), rel=1e-5)
    assert summary["accuracy_unmasked"][-1] == pytest.approx(float(torch.cat(hits).float().mean()))
    expected_masked = float(torch.cat(masked_hits).sum()) / masked
    assert summary["accuracy_masked"][-1] == pytest.approx(expected_masked)
    assert len(summary["entropy"]) == encoder.num_layers + 1
    assert profiles[0].shape == (encoder.num_layers + 1, len(SEQUENCES[0]))
    np.testing.assert_allclose(profiles[0][-1], entropies[0].numpy(), rtol=1e-5)


def test_mask_positions_count_and_range():
    positions = mask_positions(40, 0.15, torch.Generator().manual_seed(0))
    assert len(positions) == 6 and len(set(positions.tolist())) == 6
    assert positions.min() >= 0 and positions.max() < 40


def _manual_long_p_at_l(attention: np.ndarray, contacts: np.ndarray) -> float:
    sym = attention + attention.T
    corrected = sym - sym.sum(1, keepdims=True) * sym.sum(0, keepdims=True) / sym.sum()
    length = len(contacts)
    pairs = [
        (corrected[i, j], contacts[i, j]) for i in range(length) for j in range(i + 24, length)
    ]
    pairs.sort(key=lambda pair: -pair[0])
    return sum(hit for _, hit in pairs[:length]) / length


def test_head_precision_equals_manual_computation():
    rng = np.random.default_rng(0)
    length = 60
    attentions = torch.from_numpy(rng.random((2, 3, length, length))).float()
    contacts = rng.random((length, length)) < 0.2
    contacts = contacts | contacts.T
    valid = np.ones((length, length), dtype=bool)
    precisions = head_precisions(attentions, contacts, valid)
    assert precisions.shape == (2, 3)
    manual = _manual_long_p_at_l(attentions[1, 2].double().numpy(), contacts)
    assert precisions[1, 2] == pytest.approx(manual, abs=1e-6)
    top = best_heads(precisions, 2)
    assert precisions[top[0]] == precisions.max() and precisions[top[0]] >= precisions[top[1]]
    (image,) = head_maps(attentions, [(1, 2)])
    sym = attentions[1, 2].numpy() + attentions[1, 2].numpy().T
    expected = sym - sym.sum(1, keepdims=True) * sym.sum(0, keepdims=True) / sym.sum()
    np.testing.assert_allclose(image, expected, rtol=1e-4, atol=1e-5)


def test_pca_silhouette_and_knn_match_references():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (10, 5)) + 4, rng.normal(0, 1, (10, 5)) - 4])
    labels = ["a"] * 10 + ["b"] * 10
    np.testing.assert_allclose(project_2d(x, "pca"), PCA(2, random_state=0).fit_transform(x))
    assert label_silhouette(x, labels) == pytest.approx(
        silhouette_score(x, labels, metric="cosine")
    )
    assert knn_accuracy(x, labels, k=3) == 1.0
    # 1-D points: each point's nearest other point by cosine is any same-sign point
    points = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert knn_accuracy(points, ["p", "p", "q", "q"], k=1) == 1.0
    # excluding the own group removes the only same-label neighbour: all wrong
    assert knn_accuracy(points, ["p", "p", "q", "q"], k=1, groups=["g", "g", "h", "h"]) == 0.0


def test_read_proteins_labels_and_rare_letters(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(
        ">sp|P1|A_ECOLI Protein OS=Escherichia coli (strain K12) OX=83333 GN=a PE=1 SV=1\n"
        "mkuoBZx*\n"
        ">plain no organism\nACDEFG\n"
    )
    proteins = read_proteins(fasta)
    assert [p.sequence for p in proteins] == ["MKUOBZX", "ACDEFG"]
    assert proteins[0].label(ORGANISM) == "Escherichia coli" and proteins[1].label(ORGANISM) is None
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("id\tfold\nP1\tTIM\nplain\tbarrel\n")
    labelled = read_proteins(fasta, tsv, "fold")
    assert [p.label("fold") for p in labelled] == ["TIM", "barrel"]
    assert organism_of("x OS=Homo sapiens OX=9606") == "Homo sapiens"


def test_bad_fasta_inputs_name_file_and_record(tmp_path):
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.fasta"):
        read_proteins(empty)
    bad = tmp_path / "bad.fasta"
    bad.write_text(">ok\nACDE\n>broken\nAC1DE\n")
    with pytest.raises(ValueError, match=r"bad\.fasta.*broken") as err:
        read_proteins(bad)
    assert "1" in str(err.value)
    with pytest.raises(ValueError, match="no such file"):
        read_proteins(tmp_path / "missing.fasta")


def test_cli_interpret_on_a_fasta(tmp_path):
    data = require_shared("")
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=11, max_length=64)
    fasta = tmp_path / "proteins.fasta"
    records = []
    for i in range(8):
        organism = "Escherichia coli" if i % 2 else "Saccharomyces cerevisiae"
        sequence = "".join(np.random.default_rng(i).choice(list("ACDEFGHIKLMNPQRSTVWY"), 80))
        records.append(f">p{i} protein OS={organism} OX=1\n{sequence}U\n")
    fasta.write_text("".join(records))
    settings = ["probe.interpret.fast.structure_limit=3", "probe.interpret.max_proteins=6"]
    args = probe_cli_args(checkpoint, "interpret", data, f"input={fasta.name}", *settings)
    run = run_eval(tmp_path, args)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "interpret" / "metrics.json").read_text())
    assert metrics["details"]["input"] == {
        "path": str(fasta),
        "records": 8,
        "proteins": 6,
    }
    lens = metrics["details"]["logit_lens"]["by_model"]
    assert set(lens) == {"model", "random-init"} and len(lens["model"]["entropy"]) == 3
    assert 0 < lens["model"]["entropy"][-1] <= np.log(33) + 1e-6
    maps = metrics["details"]["embedding_maps"]["by_label"]
    kept = {p.id for p in stable_subset(read_proteins(fasta), 6, key=lambda p: p.id)}
    expected = Counter(
        "Escherichia coli" if int(i[1]) % 2 else "Saccharomyces cerevisiae" for i in kept
    )
    assert maps["organism"]["labels"] == dict(expected)
    heads = np.asarray(metrics["details"]["head_long_range_P@L"]["model"])
    assert heads.shape == (2, 2) and ((heads >= 0) & (heads <= 1)).all()
    for figure in metrics["figures"]:
        assert (tmp_path / "out" / figure).stat().st_size > 1000
    assert any("attention heads" in row["task"] for row in metrics["rows"])

    (tmp_path / "bad.fasta").write_text(">x\nAC#D\n")
    bad_args = probe_cli_args(
        checkpoint, "interpret", data, "input=bad.fasta", *settings, output="bad"
    )
    bad = run_eval(tmp_path, bad_args)
    assert bad.returncode == 2
    assert "bad.fasta" in bad.stderr and "'x'" in bad.stderr
    assert "Traceback" not in bad.stderr
