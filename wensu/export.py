"""Export a trained encoder: safetensors + config JSON, or a Hugging Face ESM directory.

Python::

    from wensu.export import export_hf, export_safetensors
    encoder, _ = wensu.load("runs/x/checkpoints/last.ckpt")
    export_safetensors(encoder, "export/wensu")   # model.safetensors + wensu_config.json
    export_hf(encoder, "export/hf")               # EsmForMaskedLM.from_pretrained("export/hf")

Command line::

    python -m wensu.export runs/x/checkpoints/last.ckpt export/hf --format hf

The safetensors export loads back with ``wensu.load(directory)``; the Hugging Face export holds
``config.json``, ``model.safetensors`` and the ESM tokenizer files (``vocab.txt`` ...), so
``transformers`` reads model and tokenizer from it (dense-FFN encoders only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wensu.alphabet import get_alphabet
from wensu.checkpoint import (
    EXPORT_CONFIG_NAME,
    EXPORT_FORMAT,
    EXPORT_WEIGHTS_NAME,
    load,
)
from wensu.interop import save_hf
from wensu.model import Encoder

FORMATS = ("safetensors", "hf")
HF_MAX_POSITIONS = 1026


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def export_safetensors(encoder: Encoder, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` (wensu tensor names) and ``wensu_config.json``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    tmp = directory / (EXPORT_WEIGHTS_NAME + ".tmp")
    save_file(tensors, tmp, metadata={"format": "pt", "producer": "wensu"})
    os.replace(tmp, directory / EXPORT_WEIGHTS_NAME)
    _write_json(
        directory / EXPORT_CONFIG_NAME,
        {
            "format": EXPORT_FORMAT,
            "format_version": 1,
            "model": encoder.cfg.to_dict(),
            "alphabet": list(get_alphabet().tokens),
        },
    )
    return directory


def export_hf(encoder: Encoder, directory: str | os.PathLike) -> Path:
    """Write a Hugging Face ``EsmForMaskedLM`` directory: weights, config and tokenizer files."""
    directory = Path(directory)
    save_hf(encoder, directory)
    alphabet = get_alphabet()
    _write_text(directory / "vocab.txt", "\n".join(alphabet.tokens) + "\n")
    special = {
        "cls_token": "<cls>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    }
    _write_json(directory / "special_tokens_map.json", special)
    _write_json(
        directory / "tokenizer_config.json",
        {"tokenizer_class": "EsmTokenizer", "model_max_length": HF_MAX_POSITIONS, **special},
    )
    return directory


def export(checkpoint: str | os.PathLike, directory: str | os.PathLike, fmt: str) -> Path:
    """Load ``checkpoint`` (anything ``wensu.load`` reads) and export it as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    encoder, _ = load(checkpoint)
    writer = export_safetensors if fmt == "safetensors" else export_hf
    return writer(encoder, directory)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wensu.export CHECKPOINT OUTPUT_DIR [--format safetensors|hf]``."""
    parser = argparse.ArgumentParser(
        prog="python -m wensu.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", help="wensu checkpoint, wensu export or ESM-2 file/folder")
    parser.add_argument("output", help="directory to write")
    parser.add_argument("--format", choices=FORMATS, default="safetensors")
    args = parser.parse_args(argv)
    try:
        path = export(args.checkpoint, args.output, args.format)
    except ValueError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
