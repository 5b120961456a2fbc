"""Experimental structures -> per-residue contact coordinates and contact maps.

The contact atom is Cβ (Cα for glycine; a virtual Cβ from N, Cα, C when a non-glycine residue
lacks its Cβ), and two residues are in contact when those atoms are closer than 8 Å.

Whole PDB/mmCIF entries are parsed with Bio.PDB: first model only, Bio.PDB's altloc choice
(highest occupancy), selenomethionine and other modified residues mapped to their parent amino
acid (``protein_letters_3to1_extended``). The chain's SEQRES (PDB) or entity sequence (mmCIF)
is the reference sequence; observed residues are placed on it by a global alignment in which
gaps in the author numbering are pre-filled with wildcards, so unobserved stretches land where
the numbering says (insertion codes count as consecutive residues). Files without SEQRES use
the observed residues as the sequence; with ``fill_gaps`` (user files) a numbering gap becomes
that many unknown residues ``X`` without coordinates instead, so residues that are apart in the
chain stay apart. ``min_plddt`` masks residues whose Cα B-factor (AlphaFold: pLDDT) is lower.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from Bio.Align import PairwiseAligner
from Bio.Data.PDBData import protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.MMCIF2Dict import MMCIF2Dict
from Bio.PDB.PDBExceptions import PDBConstructionException, PDBConstructionWarning

from wensu.probes.common.errors import StructureError

CONTACT_CUTOFF = 8.0
MIN_IDENTITY = 0.9
MIN_CHAIN_RESIDUES = 20  # the chain picked when none is named has at least this many
MAX_FILLED_GAP = 100  # longer numbering gaps without SEQRES are an error, not X residues
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_WILDCARD = "?"


@dataclass
class ChainStructure:
    """One protein chain on its reference sequence; ``coords`` is NaN where unobserved."""

    name: str
    sequence: str
    coords: np.ndarray  # [L, 3] contact-atom coordinates
    source: str
    atom: str = "CB (CA for Gly)"
    low_plddt: int = 0  # residues masked by min_plddt
    filled: int = 0  # unknown residues put in numbering gaps (files without SEQRES)

    @property
    def n_observed(self) -> int:
        return int(np.isfinite(self.coords).all(axis=1).sum())


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal Cβ position from backbone N, Cα, C (trRosetta/ProteinMPNN constants); [..., 3]."""
    b = ca - n
    cc = c - ca
    a = np.cross(b, cc)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca


def contact_map(
    coords: np.ndarray, cutoff: float = CONTACT_CUTOFF
) -> tuple[np.ndarray, np.ndarray]:
    """(contacts, valid) boolean [L, L] maps: distance < cutoff, and both residues observed."""
    observed = np.isfinite(coords).all(axis=1)
    filled = np.where(observed[:, None], coords, 0.0)
    dist = np.sqrt(((filled[:, None, :] - filled[None, :, :]) ** 2).sum(-1))
    valid = observed[:, None] & observed[None, :]
    return (dist < cutoff) & valid, valid


def _contact_atom(residue) -> np.ndarray | None:
    if "CB" in residue:
        return residue["CB"].coord.astype(np.float64)
    if residue.get_resname() == "GLY" and "CA" in residue:
        return residue["CA"].coord.astype(np.float64)
    if all(a in residue for a in ("N", "CA", "C")):
        n, ca, c = (residue[a].coord.astype(np.float64) for a in ("N", "CA", "C"))
        return virtual_cb(n, ca, c)
    return None


def _read_text(path: Path) -> str:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise StructureError(str(path), "unreadable", str(err)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StructureError(str(path), "not_a_structure", "binary content") from None


def _is_mmcif(path: Path, text: str) -> bool:
    stem = path.name.removesuffix(".gz")
    return stem.endswith(".cif") or text.lstrip().startswith("data_")


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _mmcif_seqres(mmcif: dict) -> dict[str, list[str]]:
    """Chain (author id) -> residue names of its entity, from ``_entity_poly_seq``."""
    if "_entity_poly_seq.mon_id" not in mmcif or "_entity_poly.pdbx_strand_id" not in mmcif:
        return {}
    by_entity: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for ent, num, mon in zip(
        _as_list(mmcif["_entity_poly_seq.entity_id"]),
        _as_list(mmcif["_entity_poly_seq.num"]),
        _as_list(mmcif["_entity_poly_seq.mon_id"]),
        strict=True,
    ):
        if (ent, num) not in seen:  # microheterogeneity: keep the first monomer at a position
            seen.add((ent, num))
            by_entity.setdefault(ent, []).append(mon)
    chains: dict[str, list[str]] = {}
    for ent, strands in zip(
        _as_list(mmcif["_entity_poly.entity_id"]),
        _as_list(mmcif["_entity_poly.pdbx_strand_id"]),
        strict=True,
    ):
        for chain in strands.split(","):
            chains[chain.strip()] = by_entity.get(ent, [])
    return chains


def _pdb_seqres(text: str) -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("SEQRES"):
            chains.setdefault(line[11], []).extend(line[19:].split())
    return chains


def _check_pdb_complete(text: str, source: str) -> None:
    """A downloaded entry (HEADER ... END) without END, or a cut coordinate line, is truncated."""
    if text.lstrip().startswith("HEADER") and "\nEND" not in text:
        raise StructureError(source, "truncated", "file has HEADER but no END record")
    lines = text.rstrip("\n").rsplit("\n", 1)
    last = lines[-1]
    if last.startswith(("ATOM", "HETATM")) and len(last.rstrip()) < 54:
        raise StructureError(
            source, "truncated", f"last line ends before its coordinates: {last!r}"
        )


def _parse(path: Path, text: str):
    """(first model, seqres by chain); structural problems -> StructureError."""
    source = str(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PDBConstructionWarning)
        try:
            if _is_mmcif(path, text):
                mmcif = MMCIF2Dict(io.StringIO(text))
                structure = MMCIFParser(QUIET=True).get_structure(path.name, io.StringIO(text))
                seqres = _mmcif_seqres(mmcif)
            else:
                _check_pdb_complete(text, source)
                structure = PDBParser(QUIET=False).get_structure(path.name, io.StringIO(text))
                seqres = _pdb_seqres(text)
        except StructureError:
            raise
        except (PDBConstructionException, ValueError, KeyError, IndexError) as err:
            raise StructureError(source, "parse_error", f"{type(err).__name__}: {err}") from None
    bad = [w for w in caught if "coordinate" in str(w.message).lower()]
    if bad:
        raise StructureError(source, "truncated", str(bad[0].message).splitlines()[0])
    models = list(structure)
    if not models:
        raise StructureError(source, "not_a_structure", "no models/atoms")
    return models[0], seqres


def _observed(chain) -> list:
    return [
        r
        for r in chain
        if r.id[0] != "W"
        and r.get_resname() in protein_letters_3to1_extended
        and any(a in r for a in ("N", "CA", "C", "CB"))
    ]


def _pick_chain(model, chain_id: str | None, source: str, seqres: dict[str, list[str]]):
    if chain_id is not None:
        if chain_id not in model and chain_id in seqres:
            raise StructureError(
                source, "empty_chain", f"chain {chain_id!r} has SEQRES but no coordinates"
            )
        if chain_id not in model:
            ids = ",".join(c.id for c in model)
            raise StructureError(source, "chain_missing", f"chain {chain_id!r} not in [{ids}]")
        chain = model[chain_id]
        if len(chain) == 0:
            raise StructureError(source, "empty_chain", f"chain {chain_id!r} has no residues")
        if not _observed(chain):
            raise StructureError(source, "not_protein", f"chain {chain_id!r} has no amino acids")
        return chain
    for chain in model:
        if len(_observed(chain)) >= MIN_CHAIN_RESIDUES:
            return chain
    raise StructureError(
        source, "not_protein", f"no chain with at least {MIN_CHAIN_RESIDUES} amino acids"
    )


def _aligner() -> PairwiseAligner:
    aligner = PairwiseAligner(mode="global", match_score=2.0, mismatch_score=-3.0)
    aligner.wildcard = _WILDCARD
    aligner.end_deletion_score = 0.0  # unobserved termini are free
    aligner.open_internal_deletion_score = -4.0
    aligner.extend_internal_deletion_score = -0.5
    aligner.open_internal_insertion_score = -6.0  # observed residue absent from SEQRES
    aligner.extend_internal_insertion_score = -1.0
    aligner.end_insertion_score = -1.0
    return aligner


def _observed_with_fillers(residues: list, max_fill: int) -> tuple[str, list[int]]:
    """Observed letters with wildcards for numbering gaps; index of each residue in that string."""
    letters, positions = [], []
    previous = None
    for residue in residues:
        number = residue.id[1]
        if previous is not None and number - previous > 1:
            letters.extend(_WILDCARD * min(number - previous - 1, max_fill))
        positions.append(len(letters))
        letters.append(protein_letters_3to1_extended[residue.get_resname()])
        previous = number
    return "".join(letters), positions


def _place_on_seqres(residues: list, seqres: str, source: str) -> np.ndarray:
    """Index into seqres of each observed residue (-1 = not placed)."""
    query, positions = _observed_with_fillers(residues, max_fill=len(seqres))
    alignment = _aligner().align(seqres, query)[0]
    target_idx, query_idx = alignment.indices
    query_to_target = np.full(len(query), -1, dtype=np.int64)
    aligned = query_idx >= 0
    query_to_target[query_idx[aligned]] = target_idx[aligned]
    placed = query_to_target[positions]
    observed = np.array([query[p] for p in positions])
    ok = placed >= 0
    seq_letters = np.array(list(seqres))
    comparable = ok & (observed != "X") & (seq_letters[np.maximum(placed, 0)] != "X")
    identity = (
        (observed[comparable] == seq_letters[placed[comparable]]).mean()
        if comparable.any()
        else 0.0
    )
    if ok.mean() < MIN_IDENTITY or identity < MIN_IDENTITY:
        raise StructureError(
            source,
            "sequence_mismatch",
            f"{ok.sum()}/{len(residues)} observed residues placed on SEQRES, "
            f"identity {identity:.2f}",
        )
    return placed


@dataclass
class PlacedChain:
    """The picked chain's observed amino acids and their index on the chain's sequence."""

    chain_id: str
    sequence: str
    residues: list  # Bio.PDB residues (model 1)
    positions: np.ndarray  # index into sequence of each residue (-1: not placed)
    source: str
    filled: int = 0
    atoms: list = field(default_factory=list)  # contact atom per residue (None: missing)


def _gap_filled(residues: list, source: str) -> tuple[str, np.ndarray, int]:
    """Observed letters with one ``X`` per residue missing from the author numbering."""
    letters, positions, previous, filled = [], [], None, 0
    for residue in residues:
        number = residue.id[1]
        gap = 0 if previous is None else number - previous - 1
        if gap > MAX_FILLED_GAP:
            raise StructureError(
                source,
                "numbering_gap",
                f"{gap} residues missing after {previous} and no SEQRES to place them",
            )
        if gap > 0:
            letters.extend("X" * gap)
            filled += gap
        positions.append(len(letters))
        letters.append(protein_letters_3to1_extended[residue.get_resname()])
        previous = number
    return "".join(letters), np.asarray(positions, dtype=np.int64), filled


def place_chain(path: Path, chain: str | None = None, *, fill_gaps: bool = False) -> PlacedChain:
    """Parse one PDB/mmCIF file (optionally .gz) and place a chain's residues on its SEQRES.

    ``chain`` is the author chain id; without it the first chain with >= 20 amino acids is used.
    Raises :class:`StructureError` (with a ``reason``) for unreadable, truncated or non-protein
    files, a missing or empty chain, a chain without coordinates, or SEQRES/observed mismatch.
    """
    path = Path(path)
    source = f"{path}" + (f" chain {chain}" if chain else "")
    text = _read_text(path)
    model, seqres_by_chain = _parse(path, text)
    picked = _pick_chain(model, chain, source, seqres_by_chain)
    residues = _observed(picked)
    atoms = [_contact_atom(r) for r in residues]
    if all(a is None for a in atoms):
        raise StructureError(source, "no_coordinates", "no CB/CA/backbone atoms in the chain")
    names = seqres_by_chain.get(picked.id)
    filled = 0
    if names:
        seqres = "".join(protein_letters_3to1_extended.get(n, "X") for n in names)
        placed = _place_on_seqres(residues, seqres, source)
    elif fill_gaps:
        seqres, placed, filled = _gap_filled(residues, source)
    else:
        seqres = "".join(protein_letters_3to1_extended[r.get_resname()] for r in residues)
        placed = np.arange(len(residues))
    return PlacedChain(picked.id, seqres, residues, placed, source, filled, atoms)


def _plddt(residue) -> float:
    atom = residue["CA"] if "CA" in residue else next(iter(residue))
    return float(atom.get_bfactor())


def parse_structure(
    path: Path,
    chain: str | None = None,
    name: str | None = None,
    *,
    fill_gaps: bool = False,
    min_plddt: float | None = None,
) -> ChainStructure:
    """Parse one PDB/mmCIF file (optionally .gz) into a chain on its SEQRES (:func:`place_chain`)
    with the contact atom of each observed residue; ``min_plddt`` masks residues whose Cα
    B-factor is below it (predicted structures with pLDDT in the B-factor column)."""
    path = Path(path)
    placed = place_chain(path, chain, fill_gaps=fill_gaps)
    coords = np.full((len(placed.sequence), 3), np.nan)
    low = 0
    for index, residue, atom in zip(placed.positions, placed.residues, placed.atoms, strict=True):
        if min_plddt is not None and _plddt(residue) < min_plddt:
            low += 1
            continue
        if index >= 0 and atom is not None:
            coords[index] = atom
    label = name or f"{path.name.split('.')[0]}_{placed.chain_id}"
    return ChainStructure(
        name=label,
        sequence=placed.sequence,
        coords=coords,
        source=str(path),
        low_plddt=low,
        filled=placed.filled,
    )


def backbone_to_structure(name: str, sequence: str, backbone, source: str) -> ChainStructure:
    """Chain from per-residue [N, CA, C, O] coordinates (None = missing).

    The contact atom is a virtual CB from the backbone (CA for Gly).
    """
    if len(backbone) != len(sequence):
        raise StructureError(
            source,
            "sequence_mismatch",
            f"{name}: {len(backbone)} coords vs {len(sequence)} residues",
        )
    bb = np.full((len(sequence), 4, 3), np.nan)
    for i, residue in enumerate(backbone):
        for j, atom in enumerate((residue or [])[:4]):
            if atom is not None:
                bb[i, j] = np.asarray(atom, dtype=np.float64)
    cb = virtual_cb(bb[:, 0], bb[:, 1], bb[:, 2])
    is_gly = np.array([aa == "G" for aa in sequence])
    coords = np.where(is_gly[:, None], bb[:, 1], cb)
    if not np.isfinite(coords).all(axis=1).any():
        raise StructureError(source, "no_coordinates", name)
    return ChainStructure(name, sequence.upper(), coords, source, atom="virtual CB (CA for Gly)")
