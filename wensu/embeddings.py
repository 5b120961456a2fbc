"""Reading embeddings files written by ``wensu-embed`` (the public reader API).

``from wensu.embeddings import load_matrix`` keeps working: the format and its reader live in
:mod:`wensu.embed.file_format`; this module re-exports them under the documented name.
"""

from wensu.embed.file_format import (
    ESM_KEYS,
    FORMAT_VERSION,
    KINDS,
    EmbeddingsFileError,
    decode_id,
    encode_id,
    file_info,
    iter_embeddings,
    layer_name,
    load_matrix,
    read,
    resolve_layer,
)

__all__ = [
    "ESM_KEYS",
    "FORMAT_VERSION",
    "KINDS",
    "EmbeddingsFileError",
    "decode_id",
    "encode_id",
    "file_info",
    "iter_embeddings",
    "layer_name",
    "load_matrix",
    "read",
    "resolve_layer",
]
