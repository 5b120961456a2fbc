"""The ``memory_limit`` setting: parsed once, turned into the sizes of the out-of-core stages.

Every process of a run (driver and workers) stays near ``memory_limit``: parsing holds one part
of about ``chunk_bytes`` of text (:data:`PARSE_FACTOR` times that at its peak), and a
deduplication partition holds at most ``(memory_limit - BASE_BYTES) / BYTES_PER_KEY`` keys.
A limit below what one part or one hash bucket needs is refused with the size to raise it to.
"""

from __future__ import annotations

import re

from .decide import BYTES_PER_KEY
from .errors import ConfigError

# Interpreter, numpy, h5py and the pipeline's own modules: 59 MB resident, measured.
BASE_BYTES = 64 << 20
# Peak bytes per byte of FASTA text while a part is parsed, hashed and written (bytes objects
# of records and sequences, the joined residues, key tables), measured ~5x; rounded up.
PARSE_FACTOR = 8
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*")


def parse_size(value) -> int:
    """``2GB``, ``512MiB``, ``1.5G`` or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ConfigError(
            f"preprocessing config: memory_limit must be a size such as 2GB or 512MiB, "
            f"got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _mb(size: int) -> str:
    return f"{-(-size // 10**6):,} MB"


def check_parse_memory(limit: int, chunk_bytes: int) -> None:
    """Refuse a limit that cannot hold one part being parsed."""
    need = BASE_BYTES + PARSE_FACTOR * chunk_bytes
    if limit < need:
        raise ConfigError(
            f"memory_limit={_mb(limit)} is too small to make progress: parsing parts of "
            f"chunk_bytes={chunk_bytes:,} needs about {_mb(need)}; raise memory_limit to at "
            f"least {_mb(need)} or lower chunk_bytes"
        )


def partition_keys(limit: int) -> int:
    """How many keys one deduplication partition may hold."""
    return max((limit - BASE_BYTES) // BYTES_PER_KEY, 1)


def bucket_error(err: MemoryError, biggest: int) -> ConfigError:
    """The message for a hash bucket larger than a partition may be."""
    need = BASE_BYTES + biggest * BYTES_PER_KEY
    return ConfigError(
        f"memory_limit is too small to make progress: {err}; raise memory_limit to at least "
        f"{_mb(need)}"
    )
