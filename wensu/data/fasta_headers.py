"""FASTA header parsing: the record id, the detected header format, the NCBI taxon.

Formats recognised: UniProtKB (``sp|P12345|NAME_ORG ... OX=9606``), UniRef, UniParc
(``UPI... status=active``), Prokka (``~~~``-separated fields), ASTRAL/SCOPe and plain (first
word). :func:`parse_header` is the full answer; :func:`header_id_taxon` is the same id and
taxon without building a :class:`HeaderInfo`, for the bulk parser's hot loop.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_UNIPROT_KEYS = re.compile(r" (OS|OX|GN|PE|SV)=")
_UNIREF_KEYS = re.compile(r" (n|Tax|TaxID|RepID)=")
_UNIPARC_ID = re.compile(r"UPI[0-9A-F]{10}")
_ASTRAL_ID = re.compile(r"[dge][0-9][0-9a-z]{3}[0-9a-zA-Z._]{2,3}")
_SCCS = re.compile(r"[a-l]\.[0-9]+\.[0-9]+\.[0-9]+")
_ASTRAL_TAXON = re.compile(r"\[TaxId: ?([0-9]+)\]")
_KEY_VALUE = re.compile(r"(\w+)=(\S*)")


class HeaderInfo(NamedTuple):
    """What a FASTA header says: ``id`` (first word, or the accession for UniProtKB), the
    detected ``format`` (uniprot, uniref, uniparc, prokka, astral, plain), and where present
    ``db`` (sp/tr), ``entry_name`` and NCBI ``taxon``. :meth:`fields` gives the rest."""

    id: str
    format: str
    description: str
    db: str | None = None
    entry_name: str | None = None
    taxon: int | None = None

    def fields(self) -> dict[str, str]:
        """Format-specific fields (computed on demand; the hot path never needs them)."""
        desc = self.description
        if self.format in ("uniprot", "uniref"):
            pattern = _UNIPROT_KEYS if self.format == "uniprot" else _UNIREF_KEYS
            parts = pattern.split(" " + desc)
            out = {"name": parts[0].strip()}
            out.update(zip(parts[1::2], (v.strip() for v in parts[2::2]), strict=True))
            return out
        if self.format == "uniparc":
            return dict(_KEY_VALUE.findall(desc))
        if self.format == "prokka":
            values = desc.split("~~~")
            names = ("ec", "gene", "product", "cog")
            return {name: (values[i] if i < len(values) else "") for i, name in enumerate(names)}
        if self.format == "astral":
            sccs, _, rest = desc.partition(" ")
            out = {"sccs": sccs}
            if rest.startswith("(") and ")" in rest:
                region, _, rest = rest[1:].partition(")")
                out["region"] = region
            out["description"] = rest.strip()
            return out
        return {}


def _int_after(text: str, key: str) -> int | None:
    at = text.find(key)
    if at < 0:
        return None
    start = at + len(key)
    end = text.find(" ", start)
    digits = text[start:] if end < 0 else text[start:end]
    # isascii: str.isdigit also accepts digits such as '²' that int() refuses.
    return int(digits) if digits.isascii() and digits.isdigit() else None


def parse_header(header: str) -> HeaderInfo:
    """Parse a header line (without ``>``). An empty ``id`` means the header has none."""
    if not header or header[0].isspace():
        return HeaderInfo("", "plain", header.strip())
    parts = header.split(None, 1)
    token = parts[0]
    desc = parts[1].rstrip() if len(parts) > 1 else ""
    if token[2:3] == "|" and token[:2] in ("sp", "tr"):
        pieces = token.split("|")
        name = pieces[2] if len(pieces) > 2 and pieces[2] else None
        taxon = _int_after(desc, " OX=")
        return HeaderInfo(pieces[1] or token, "uniprot", desc, pieces[0], name, taxon)
    if token.startswith("UniRef"):
        return HeaderInfo(token, "uniref", desc, None, None, _int_after(desc, " TaxID="))
    if "~~~" in desc:
        return HeaderInfo(token, "prokka", desc)
    if desc.startswith("status=") and _UNIPARC_ID.fullmatch(token):
        return HeaderInfo(token, "uniparc", desc)
    if _ASTRAL_ID.fullmatch(token) and _SCCS.match(desc):
        found = _ASTRAL_TAXON.search(desc)
        return HeaderInfo(token, "astral", desc, None, None, int(found.group(1)) if found else None)
    return HeaderInfo(token, "plain", desc, None, None, _int_after(" " + desc, " OX="))


def header_id_taxon(header: str) -> tuple[str, int]:
    """``(id, taxon)`` exactly as :func:`parse_header` gives them, with -1 for no taxon.

    UniProtKB headers (nearly all of the real input) take a short path that builds no
    :class:`HeaderInfo`; every other header goes through :func:`parse_header`.
    """
    if header[2:3] == "|" and header[:2] in ("sp", "tr"):
        parts = header.split(None, 1)
        token = parts[0]
        if token[2:3] == "|":
            taxon = _int_after(parts[1].rstrip(), " OX=") if len(parts) > 1 else None
            return token.split("|", 2)[1] or token, -1 if taxon is None else taxon
    info = parse_header(header)
    return info.id, -1 if info.taxon is None else info.taxon
