"""An openai-whisper checkpoint as a whisper.cpp (ggml) model file, offline.

Only for the bench's whisper.cpp row: whisper.cpp reads its own single-file
format, which whisper.cpp's ``models/convert-pt-to-ggml.py`` makes from a
``.pt`` checkpoint and a clone of openai/whisper (for the mel filters and the
tokenizer). This writes the same legacy ggml layout from what is already here:
the packaged weights converted to a checkpoint by ``whisper_mcp.models``, and
the assets the installed openai-whisper package ships. Float16 weights (1-D
tensors, conv biases and positional embeddings stay float32, as whisper.cpp
expects); quantised variants need whisper.cpp's own ``quantize`` tool.

    .venv/bin/python bench/ggml.py tiny.en [OUT.bin]
"""

from __future__ import annotations

import base64
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

_MAGIC = 0x67676D6C  # "ggml"
_HPARAMS = (
    "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
    "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels",
)  # fmt: skip
_FLOAT32_NAMES = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def write_ggml(checkpoint_path: Path, out: Path) -> Path:
    """Write ``out`` (atomically) from an openai-whisper checkpoint; return it."""
    import torch
    import whisper

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    dims = checkpoint["dims"]
    assets = Path(whisper.__file__).parent / "assets"
    with np.load(assets / "mel_filters.npz") as f:
        filters = np.asarray(f[f"mel_{dims['n_mels']}"], dtype=np.float32)
    vocabulary = "multilingual.tiktoken" if dims["n_vocab"] >= 51865 else "gpt2.tiktoken"
    tokens = [
        base64.b64decode(token)
        for token, _rank in (line.split() for line in (assets / vocabulary).read_bytes().splitlines() if line)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("i", _MAGIC))
            f.write(struct.pack("10i", *(int(dims[k]) for k in _HPARAMS)))
            f.write(struct.pack("i", 1))  # float16 weights
            f.write(struct.pack("ii", *filters.shape))
            f.write(filters.astype("<f4").tobytes())
            f.write(struct.pack("i", len(tokens)))
            for token in tokens:
                f.write(struct.pack("i", len(token)))
                f.write(token)
            for name, tensor in checkpoint["model_state_dict"].items():
                data = tensor.squeeze().float().numpy()
                if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                    data = data.reshape(data.shape[0], 1)
                small = data.ndim < 2 or name in _FLOAT32_NAMES
                data = data.astype("<f4" if small else "<f2")
                encoded = name.encode()
                f.write(struct.pack("iii", data.ndim, len(encoded), 0 if small else 1))
                f.write(struct.pack(f"{data.ndim}i", *reversed(data.shape)))  # ggml lists dimensions innermost first
                f.write(encoded)
                f.write(np.ascontiguousarray(data).tobytes())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def ggml_model(name: str, cache: Path) -> Path:
    """``cache/ggml/<name>-f16.bin`` for a packaged model, converted once."""
    from whisper_mcp.models.convert import ensure_checkpoint, find_packaged_models

    out = cache / "ggml" / f"{name}-f16.bin"
    if not out.is_file():
        checkpoint = ensure_checkpoint(find_packaged_models()[name], cache / "converted")
        write_ggml(checkpoint, out)
    return out


if __name__ == "__main__":
    from whisper_mcp.config import default_model_cache

    if len(sys.argv) == 3:
        from whisper_mcp.models.convert import ensure_checkpoint, find_packaged_models

        cache = default_model_cache()
        print(
            write_ggml(ensure_checkpoint(find_packaged_models()[sys.argv[1]], cache / "converted"), Path(sys.argv[2]))
        )
    elif len(sys.argv) == 2:
        print(ggml_model(sys.argv[1], default_model_cache()))
    else:
        raise SystemExit(__doc__)
