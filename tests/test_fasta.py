"""wensu.data.fasta: header formats, block-boundary-proof streaming, validation, real files."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import pytest
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.data import fasta_stream
from wensu.data.fasta import (
    Chunk,
    FastaRecord,
    InvalidRecordError,
    NotFastaError,
    RawRecord,
    RecordColumns,
    RejectedRecord,
    TruncatedFastaError,
    check_chunk,
    check_record,
    header_id_taxon,
    iter_chunks,
    iter_raw_records,
    parse_header,
    read_fasta,
    residue_bytes,
)

VALID = residue_bytes()


def test_residue_bytes_follow_the_alphabet():
    singles = {t for t in get_alphabet().tokens if len(t) == 1}
    assert set(residue_bytes(allow_gaps=True).decode()) == singles
    assert set(VALID.decode()) == singles - {".", "-"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("UPI0000000001 status=active", ("UPI0000000001", "uniparc", None, None, None)),
        (
            "sp|P13738|NHAA_ECOLI Na(+)/H(+) antiporter NhaA OS=Escherichia coli (strain K12) "
            "OX=83333 GN=nhaA PE=1 SV=3",
            ("P13738", "uniprot", "sp", "NHAA_ECOLI", 83333),
        ),
        ("tr|A0A024|A0_X Unknown OS=Homo OX=9606", ("A0A024", "uniprot", "tr", "A0_X", 9606)),
        ("sp|P12345-2|N_HUMAN Isoform 2 OX=9606", ("P12345-2", "uniprot", "sp", "N_HUMAN", 9606)),
        ("O57809 3.5.99.7~~~~~~Putative deaminase~~~", ("O57809", "prokka", None, None, None)),
        (
            "d12asa_ d.104.1.1 (A:) Asparagine synthetase {Escherichia coli [TaxId: 562]} ",
            ("d12asa_", "astral", None, None, 562),
        ),
        ("UniRef50_Q6 Putative n=1 TaxID=10493", ("UniRef50_Q6", "uniref", None, None, 10493)),
        ("my_protein some description", ("my_protein", "plain", None, None, None)),
        ("I3DG63 d.104.1.1 d12asa_ Asn OX=1095749", ("I3DG63", "plain", None, None, 1095749)),
        ("", ("", "plain", None, None, None)),
        ("  id_after_space", ("", "plain", None, None, None)),
    ],
)  # fmt: skip
def test_parse_header_formats(header, expected):
    info = parse_header(header)
    assert (info.id, info.format, info.db, info.entry_name, info.taxon) == expected


def test_header_fields():
    uniprot = parse_header(
        "sp|P13738|NHAA_ECOLI Na(+)/H(+) antiporter NhaA OS=Escherichia coli (strain K12) "
        "OX=83333 GN=nhaA PE=1 SV=3"
    )
    assert uniprot.fields() == {
        "name": "Na(+)/H(+) antiporter NhaA",
        "OS": "Escherichia coli (strain K12)",
        "OX": "83333",
        "GN": "nhaA",
        "PE": "1",
        "SV": "3",
    }
    assert parse_header("UPI00000000AE status=inactive").fields() == {"status": "inactive"}
    prokka = parse_header("O57809 3.5.99.7~~~acdS~~~Putative deaminase~~~COG2515")
    assert prokka.fields() == {
        "ec": "3.5.99.7",
        "gene": "acdS",
        "product": "Putative deaminase",
        "cog": "COG2515",
    }
    astral = parse_header("d12asa_ d.104.1.1 (A:) Asparagine synthetase {E. coli [TaxId: 562]}")
    assert astral.fields() == {
        "sccs": "d.104.1.1",
        "region": "A:",
        "description": "Asparagine synthetase {E. coli [TaxId: 562]}",
    }


@pytest.mark.parametrize(
    "header",
    [
        "sp|P13738|NHAA_ECOLI Na(+)/H(+) antiporter OS=E. coli OX=83333 GN=nhaA PE=1 SV=3",
        "tr|A0A024|A0_X Unknown OS=Homo OX=9606",
        "sp|P1|N_X  OX=9",  # the whitespace run before the description is no part of it
        "sp|P1|N_X OX=9",
        "sp|P1|N_X desc OX=12\t",
        "sp|P1|N_X desc\tOX=12 rest",
        "sp|P1|N_X desc OX=12x GN=a",
        "sp|P1|N_X desc OX=\u00b2",  # a digit to str.isdigit, not to int()
        "sp||N_X desc OX=5",
        "sp|P1",
        "tr|Q9\u00a0desc OX=3",
        "UniRef50_Q6 Putative n=1 TaxID=10493",
        "d12asa_ d.104.1.1 (A:) Asparagine synthetase {E. coli [TaxId: 562]}",
        "I3DG63 d.104.1.1 d12asa_ Asn OX=1095749",
        "  id_after_space",
        "plain",
    ],
)
def test_header_id_taxon_agrees_with_parse_header(header):
    info = parse_header(header)
    assert header_id_taxon(header) == (info.id, -1 if info.taxon is None else info.taxon)


def _records_reference(text: bytes) -> list[tuple[bytes, int, int]]:
    """Naive whole-file split: (data after '>', byte offset, line) per record."""
    out, offset = [], 0
    for piece in text[1:].split(b"\n>"):
        out.append((piece, offset, text[:offset].count(b"\n") + 1))
        offset += len(piece) + 2
    return out


FASTA_TEXT = b">a1 first\nMKV\nLLA\n>b2\r\nmkvl\r\n>c3 x\n\nAAA\n\n>d4\n>e5 y\nG G G*\n" + b"".join(
    b">r%d\n%s\n" % (i, b"ACDEFGHIKL" * (i % 7 + 1)) for i in range(60)
)


@pytest.mark.parametrize("block_size", [1, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("compress", [False, True])
def test_block_boundaries_do_not_change_records(tmp_path, block_size, compress, inflater):
    path = tmp_path / ("x.fa.gz" if compress else "x.fa")
    path.write_bytes(gzip.compress(FASTA_TEXT) if compress else FASTA_TEXT)
    got = [(r.data, r.offset, r.line) for r in iter_raw_records(path, block_size=block_size * 4)]
    assert got == _records_reference(FASTA_TEXT)


def test_byte_range_and_concatenated_gzip_members(tmp_path, inflater):
    path = tmp_path / "two.fa.gz"
    half = FASTA_TEXT.index(b">r30")
    path.write_bytes(gzip.compress(FASTA_TEXT[:half]) + gzip.compress(FASTA_TEXT[half:]))
    got = [(r.data, r.offset, r.line) for r in iter_raw_records(path, block_size=256)]
    assert got == _records_reference(FASTA_TEXT)
    plain = tmp_path / "p.fa"
    plain.write_bytes(FASTA_TEXT)
    head = list(iter_raw_records(plain, 0, half))
    tail = list(iter_raw_records(plain, half, None))
    whole = list(iter_raw_records(plain))
    assert [r.data.rstrip(b"\n") for r in head + tail] == [r.data.rstrip(b"\n") for r in whole]
    assert [r.offset for r in tail] == [r.offset for r in whole[len(head) :]]


def test_check_record_cleans_and_validates():
    def check(data: bytes) -> FastaRecord | RejectedRecord:
        return check_record(RawRecord(data, 0, 1), VALID)

    ok = check(b"sp|P1|N_X desc OX=9\r\nmk vl\r\nacd*\r\n")
    assert isinstance(ok, FastaRecord)
    assert (ok.id, ok.sequence, ok.header.taxon) == ("P1", b"MKVLACD", 9)
    reasons = {
        b"\nMKV": "missing_id",
        b" desc\nMKV": "missing_id",
        b"id\xff\xfe\nMKV": "invalid_header_encoding",
        b"id\x00\nMKV": "binary_data",
        b"id\nMK\x00V": "binary_data",
        b"id\n": "empty_sequence",
        b"id\n*\n": "empty_sequence",
        b"id\nMK*VL\n": "internal_stop",
        b"id\nMKJ1V\n": "invalid_characters",
        b"id\nMK-V\n": "invalid_characters",
    }
    for data, reason in reasons.items():
        result = check(data)
        assert isinstance(result, RejectedRecord), data
        assert result.reason == reason, data
    assert "'1J'" in check(b"id\nMKJ1V\n").detail
    assert "residue 3" in check(b"id\nMKJ1V\n").detail
    gapped = check_record(RawRecord(b"id\nMK-V.\n", 0, 1), residue_bytes(allow_gaps=True))
    assert isinstance(gapped, FastaRecord) and gapped.sequence == b"MK-V."


def test_preamble_binary_and_empty_files(tmp_path):
    orphan = tmp_path / "orphan.fa"
    orphan.write_bytes(b"MKVL\nAAA\n>x\nMK\n")
    raws = list(iter_raw_records(orphan))
    assert raws[0].orphan and raws[0].data == b"MKVL\nAAA\n"
    assert (raws[1].data, raws[1].offset, raws[1].line) == (b"x\nMK\n", 9, 3)
    blank = tmp_path / "blank.fa"
    blank.write_bytes(b"\xef\xbb\xbf\n\n>x\nMK\n")
    assert [(r.data, r.line) for r in iter_raw_records(blank)] == [(b"x\nMK\n", 3)]
    binary = tmp_path / "binary.fa"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00\x00>x\nMK\n")
    with pytest.raises(NotFastaError, match=r"binary\.fa: not a FASTA file.*offset 8"):
        list(iter_raw_records(binary))
    empty = tmp_path / "empty.fa"
    empty.write_bytes(b"")
    assert list(iter_raw_records(empty)) == []


def _columns_reference(chunks: list[Chunk], valid: bytes) -> tuple[list, list]:
    """Valid (id, sequence, taxon, line) rows and rejected records, via check_chunk."""
    kept, rejected = [], []
    for chunk in chunks:
        if chunk.orphan:
            rejected.append(
                check_record(RawRecord(chunk.data, chunk.offset, chunk.line, True), valid)
            )
            continue
        for result in check_chunk(chunk, valid):
            if isinstance(result, FastaRecord):
                taxon = -1 if result.header.taxon is None else result.header.taxon
                kept.append((result.id, result.sequence, taxon, result.line))
            else:
                rejected.append(result)
    return kept, rejected


MESSY_TEXT = (
    b"orphan text\n>sp|P1|A_B desc OX=9\nmkv\r\nLL*\n>bad\nMK1J\n>\x00nul\nMK\n>hdr\xff\nMK\n"
    b">stop\nMK*V\n>\nMKV\n>empty\n*\n>UPI0000000001 status=inactive\nMKW\n>nul2\nM\x00K\n"
    b">UPI0000000002 status=active\nMKWW\n" + FASTA_TEXT
)  # fmt: skip


@pytest.mark.parametrize("block_size", [16, 64, 1 << 20])
@pytest.mark.parametrize("allow_gaps", [False, True])
def test_record_columns_decide_like_check_chunk(tmp_path, block_size, allow_gaps):
    path = tmp_path / "messy.fa"
    path.write_bytes(MESSY_TEXT.replace(b">r7\n", b">r7\nMK-.V\n"))
    valid = residue_bytes(allow_gaps)
    chunks = list(iter_chunks(path, block_size=block_size))
    columns = RecordColumns(valid, track_inactive=True)
    for chunk in chunks:
        columns.add_chunk(chunk)
    kept, rejected = _columns_reference(chunks, valid)
    assert (
        list(zip(columns.ids, columns.sequences, columns.taxa, columns.lines, strict=True)) == kept
    )
    assert columns.rejected == rejected
    assert len(kept) > 60 and len(rejected) == (9 if allow_gaps else 10)
    assert columns.inactive == [rid == "UPI0000000001" for rid, *_ in kept]


@pytest.fixture(params=["default", "zlib"])
def inflater(request, monkeypatch):
    """Run gzip tests with the default inflater (ISA-L when installed) and with plain zlib."""
    if request.param == "zlib":
        monkeypatch.setattr(fasta_stream, "_inflate_module", zlib)
    return request.param


def test_truncated_gzip_keeps_complete_records_and_names_position(tmp_path, inflater):
    path = tmp_path / "cut.fa.gz"
    data = gzip.compress(FASTA_TEXT)
    path.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(TruncatedFastaError) as info:
        for raw in iter_raw_records(path, block_size=64):
            seen.append(raw)
    err = info.value
    assert str(path) in str(err) and "offset" in str(err)
    assert 0 < err.offset < len(FASTA_TEXT)
    assert err.line == FASTA_TEXT[: err.offset].count(b"\n") + 1
    reference = _records_reference(FASTA_TEXT)
    assert [r.offset for r in seen] == [e[1] for e in reference[: len(seen)]]
    assert err.partial_offset == reference[len(seen)][1]
    # The id as far as it was read (the damage may cut the header line itself).
    assert reference[len(seen)][0].decode().startswith(err.partial_id)
    corrupt = tmp_path / "corrupt.fa.gz"
    corrupt.write_bytes(data[:20] + bytes(40) + data[60:])
    with pytest.raises(TruncatedFastaError, match="corrupt gzip data"):
        list(iter_raw_records(corrupt))


def test_read_fasta_raise_and_skip(tmp_path):
    path = tmp_path / "mixed.fa"
    path.write_bytes(b">ok1\nMKV\n>bad\nMK*V\n>ok2\nACD\n")
    with pytest.raises(InvalidRecordError, match=r"mixed\.fa: line 3: record 'bad'.*internal_stop"):
        list(read_fasta(path))
    rejected: list = []
    assert [r.id for r in read_fasta(path, errors="skip", rejected=rejected)] == ["ok1", "ok2"]
    assert [(r.id, r.reason, r.line) for r in rejected] == [("bad", "internal_stop", 3)]


# ---------------------------------------------------------------------------- real shared data

SHARED_COUNTS = {
    "uniparc/uniparc_UPI0000000001-UPI0000000308.fasta": (776, 158_553, 8, 1906),
    "uniparc/uniparc_gq1-blast-fasta.fasta": (7, 1_589, 133, 304),
    "uniprot_proteomes/UP000000625-E.coli.fasta.gz": (4_363, 1_358_898, 13, 2358),
    "uniprot_proteomes/UP000001014-S.typhimurium.fasta.gz": (4_538, 1_423_640, 14, 5559),
    "uniprot_proteomes/UP000001197-P.anserina.fasta.gz": (10_657, 5_371_942, 14, 8070),
    "uniprot_proteomes/UP000001203-Cyanothece.fasta.gz": (5_239, 1_562_895, 17, 3193),
    "uniprot_proteomes/UP000001425-Synechocystis.fasta.gz": (3_508, 1_123_132, 29, 4199),
    "uniprot_proteomes/UP000001450-P.falciparum.fasta.gz": (5_445, 4_172_673, 29, 10287),
    "uniprot_proteomes/UP000002311-S.cerevisiae.fasta.gz": (6_077, 2_949_369, 16, 4910),
    "uniprot_proteomes/UP000002483-Anabaena.PCC7120.fasta.gz": (6_071, 1_955_973, 17, 4936),
    "uniprot_proteomes/UP000002717-S.elongatus.fasta.gz": (2_658, 809_010, 29, 1807),
    "uniprot_proteomes/UP000008066-C.thermophilum.fasta.gz": (7_184, 3_925_074, 22, 8081),
    "uniprot_proteomes/UP000008524-T.brucei.fasta.gz": (8_587, 4_345_578, 17, 8214),
    "uniprot_proteomes/UP000008962-S.typhimurium.fasta.gz": (4_659, 1_450_249, 16, 5559),
    "uniprot_proteomes/UP000031513-P.knowlesi.fasta.gz": (5_100, 3_704_850, 28, 10549),
    "uniprot_proteomes/UP000074855-P.berghei.fasta.gz": (4_927, 3_405_498, 29, 9556),
    "uniprot_proteomes/UP000221734-K.stuttgartiensis.fasta.gz": (3_801, 1_118_467, 29, 3219),
    "prokka_sprot/prokka_Archaea_sprot.fasta.gz": (2_872, 904_468, 29, 2894),
    "prokka_sprot/prokka_Mitochondria_sprot.fasta.gz": (1_273, 346_132, 27, 982),
    "prokka_sprot/prokka_Viruses_sprot.fasta.gz": (4_450, 2_592_475, 24, 7180),
    "scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz": (10_246, 1_795_362, 23, 858),
}


@pytest.mark.shared_data
def test_every_shared_fasta_matches_sources_md():
    """Records, residues and length range per file, as SOURCES.md states them."""
    totals = {"uniprot_proteomes": 0, "prokka_sprot": 0}
    unique_proteome: set[bytes] = set()
    for relative, (records, residues, shortest, longest) in SHARED_COUNTS.items():
        path = require_shared(f"sequences/{relative}")
        lengths = []
        for record in read_fasta(path):
            lengths.append(len(record.sequence))
            if relative.startswith("uniprot_proteomes"):
                unique_proteome.add(hashlib.blake2b(record.sequence, digest_size=16).digest())
        assert (len(lengths), sum(lengths), min(lengths), max(lengths)) == (
            records,
            residues,
            shortest,
            longest,
        ), relative
        folder = relative.split("/")[0]
        if folder in totals:
            totals[folder] += records
    assert totals == {"uniprot_proteomes": 82_814, "prokka_sprot": 8_595}
    assert len(unique_proteome) == 78_810


@pytest.mark.shared_data
def test_shared_header_fields():
    uniparc = require_shared("sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta")
    records = list(read_fasta(uniparc))
    status = [r.header.fields()["status"] for r in records]
    assert (status.count("active"), status.count("inactive")) == (770, 6)
    inactive = [r.id for r in records if r.header.fields()["status"] == "inactive"]
    assert inactive == [
        "UPI00000000AE",
        "UPI00000000B4",
        "UPI00000000B5",
        "UPI00000000BD",
        "UPI00000001F1",
        "UPI00000002F5",
    ]
    gq1 = require_shared("sequences/uniparc/uniparc_gq1-blast-fasta.fasta")
    assert [(r.id, r.sequence) for r in read_fasta(gq1)] == [
        (r.id, r.sequence) for r in records[:7]
    ]
    ecoli = require_shared("sequences/uniprot_proteomes/UP000000625-E.coli.fasta.gz")
    by_id = {r.id: r for r in read_fasta(ecoli)}
    nhaa = by_id["P13738"]
    assert (nhaa.header.db, nhaa.header.entry_name, nhaa.header.taxon) == (
        "sp",
        "NHAA_ECOLI",
        83333,
    )
    assert nhaa.header.fields()["GN"] == "nhaA"
    assert all(r.header.taxon == 83333 for r in by_id.values())
    assert {r.header.db for r in by_id.values()} == {"sp", "tr"}
    prokka = require_shared("sequences/prokka_sprot/prokka_Archaea_sprot.fasta.gz")
    first = next(read_fasta(Path(prokka)))
    assert first.header.format == "prokka" and first.header.taxon is None
    scop = require_shared("sequences/scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz")
    astral = [r for r in read_fasta(scop) if r.header.format == "astral"]
    assert astral and all(r.header.fields()["sccs"].count(".") == 3 for r in astral)
