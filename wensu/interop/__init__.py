"""ESM-2 interop: fair-esm and Hugging Face checkpoints <-> wensu `Encoder` with the same outputs.

See `wensu.interop.esm` for the one known difference (float16-rounded rotary frequencies).

Users with the official files (no download happens here; fetch them yourself):

    # fair-esm file, e.g. ~/.cache/torch/hub/checkpoints/esm2_t6_8M_UR50D.pt
    python -c "from wensu.interop import load_esm2; print(load_esm2('esm2_t6_8M_UR50D.pt').cfg)"
    # Hugging Face snapshot directory (config.json + model.safetensors / pytorch_model.bin)
    python -c "from wensu.interop import load_esm2; load_esm2('/path/to/esm2_t6_8M_UR50D')"
    # embeddings straight from an ESM-2 file (wensu.load accepts ESM-2 files too)
    wensu-embed checkpoint=/path/esm2_t6_8M_UR50D.pt input=proteins.fasta output=emb.h5

Windowed attention for long sequences over ESM-2 weights:
`load_esm2(path, attention={"backend": "chunked", "window": 512})`.
Export a dense wensu encoder back to Hugging Face: `to_hf(encoder)` or `save_hf(encoder, dir)`.
"""

from wensu.interop.esm import EsmCheckpointError
from wensu.interop.fair_esm import from_fair_esm
from wensu.interop.files import load_esm2
from wensu.interop.hf import from_hf, save_hf, to_hf

__all__ = ["EsmCheckpointError", "from_fair_esm", "from_hf", "load_esm2", "save_hf", "to_hf"]
