"""Unit tests for whisper_mcp.formats (pure, fast, no whisper/model needed)."""

from __future__ import annotations

import json
import random
import re

import pytest

from whisper_mcp.formats import (
    FORMATS,
    MEDIA_TYPES,
    format_timestamp,
    render,
    to_json,
    to_srt,
    to_tsv,
    to_txt,
    to_vtt,
)


def make_result(segments, text=None):
    if text is None:
        text = "".join(s["text"] for s in segments)
    return {"text": text, "language": "en", "duration": 62.3, "segments": segments}


def seg(i, start, end, text, **extra):
    return {"id": i, "start": start, "end": end, "text": text, **extra}


SAMPLE = make_result(
    [
        seg(
            0,
            0.0,
            4.2,
            " Hello world.",
            words=[
                {"word": " Hello", "start": 0.0, "end": 0.5, "probability": 0.93},
                {"word": " world.", "start": 0.5, "end": 4.2, "probability": 0.9},
            ],
        ),
        seg(1, 4.2, 7.25, " Second line."),
    ]
)
EMPTY = {"text": "", "language": "en", "duration": 3.0, "segments": []}


# --- tiny parsers used for round-trip checks -------------------------------

TS = r"(\d{2,}):(\d{2}):(\d{2})[.,](\d{3})"
SRT_CUE = re.compile(rf"^(\d+)\n{TS} --> {TS}\n((?:.+\n)+)$")
VTT_CUE = re.compile(rf"^{TS} --> {TS}\n((?:.+\n)+)$")


def ts_ms(h, m, s, ms):
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_srt(data):
    if data == "":
        return []
    cues = []
    for block in data.split("\n\n"):
        block = block if block.endswith("\n") else block + "\n"
        m = SRT_CUE.match(block)
        assert m, f"malformed SRT cue: {block!r}"
        g = m.groups()
        cues.append((int(g[0]), ts_ms(*g[1:5]), ts_ms(*g[5:9]), g[9].rstrip("\n")))
    return cues


def parse_vtt(data):
    assert data.startswith("WEBVTT\n")
    body = data[len("WEBVTT\n") :]
    if body == "":
        return []
    assert body.startswith("\n")
    cues = []
    for block in body[1:].split("\n\n"):
        block = block if block.endswith("\n") else block + "\n"
        m = VTT_CUE.match(block)
        assert m, f"malformed VTT cue: {block!r}"
        g = m.groups()
        text = g[8].rstrip("\n").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        cues.append((ts_ms(*g[0:4]), ts_ms(*g[4:8]), text))
    return cues


# --- format_timestamp --------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, "00:00:00.000"),
        (0.0, "00:00:00.000"),
        (-0.0, "00:00:00.000"),
        (4.2, "00:00:04.200"),
        (1.9996, "00:00:02.000"),  # no "1000 ms" overflow
        (59.9995, "00:01:00.000"),  # carries through seconds and minutes
        (3599.9999, "01:00:00.000"),
        (1.0005, "00:00:01.001"),  # half-up on the decimal value, not float error
        (0.0004, "00:00:00.000"),
        (3725.5, "01:02:05.500"),  # over an hour
        (100 * 3600 + 1.25, "100:00:01.250"),  # hours grow past two digits
        (7, "00:00:07.000"),  # ints accepted
    ],
)
def test_format_timestamp(seconds, expected):
    assert format_timestamp(seconds) == expected


def test_format_timestamp_marker_and_optional_hours():
    assert format_timestamp(3725.5, decimal_marker=",") == "01:02:05,500"
    assert format_timestamp(65.5, always_include_hours=False) == "01:05.500"
    assert format_timestamp(3725.5, always_include_hours=False) == "01:02:05.500"


@pytest.mark.parametrize("bad", [-0.001, -1, float("nan"), float("inf"), "1.0", None, True])
def test_format_timestamp_rejects_invalid(bad):
    with pytest.raises(ValueError):
        format_timestamp(bad)


# --- registry / render -------------------------------------------------------


def test_formats_and_media_types():
    assert FORMATS == ("txt", "srt", "vtt", "json", "tsv")
    assert MEDIA_TYPES == {
        "txt": "text/plain; charset=utf-8",
        "srt": "application/x-subrip; charset=utf-8",
        "vtt": "text/vtt; charset=utf-8",
        "json": "application/json",
        "tsv": "text/tab-separated-values; charset=utf-8",
    }


def test_render_dispatches():
    assert render(SAMPLE, "txt") == to_txt(SAMPLE)
    assert render(SAMPLE, "srt") == to_srt(SAMPLE)
    assert render(SAMPLE, "vtt") == to_vtt(SAMPLE)
    assert render(SAMPLE, "json") == to_json(SAMPLE)
    assert render(SAMPLE, "tsv") == to_tsv(SAMPLE)
    assert render(SAMPLE, "SRT") == to_srt(SAMPLE)


@pytest.mark.parametrize("fmt", ["docx", "", "srt2"])
def test_render_unknown_format(fmt):
    with pytest.raises(ValueError) as exc:
        render(SAMPLE, fmt)
    for name in FORMATS:
        assert name in str(exc.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_formats_return_str_for_sample_and_empty(fmt):
    assert isinstance(render(SAMPLE, fmt), str)
    assert isinstance(render(EMPTY, fmt), str)


# --- exact outputs -----------------------------------------------------------


def test_txt():
    assert to_txt(SAMPLE) == "Hello world. Second line.\n"
    assert to_txt(EMPTY) == ""
    assert to_txt({"text": "  \n ", "segments": []}) == ""
    # falls back to segments when the full text is missing
    assert to_txt({"segments": [seg(0, 0, 1, " a"), seg(1, 1, 2, " b")]}) == "a b\n"


def test_srt_exact():
    assert to_srt(SAMPLE) == (
        "1\n00:00:00,000 --> 00:00:04,200\nHello world.\n\n2\n00:00:04,200 --> 00:00:07,250\nSecond line.\n"
    )


def test_vtt_exact():
    assert to_vtt(SAMPLE) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:04.200\nHello world.\n\n00:00:04.200 --> 00:00:07.250\nSecond line.\n"
    )


def test_tsv_exact():
    assert to_tsv(SAMPLE) == "start\tend\ttext\n0\t4200\tHello world.\n4200\t7250\tSecond line.\n"


def test_empty_transcript_gives_valid_empty_files():
    assert to_srt(EMPTY) == ""
    assert to_vtt(EMPTY) == "WEBVTT\n"
    assert to_tsv(EMPTY) == "start\tend\ttext\n"
    assert to_txt(EMPTY) == ""
    assert json.loads(to_json(EMPTY)) == EMPTY
    # missing / null segments behave like no segments
    for r in ({"text": ""}, {"text": "", "segments": None}):
        assert to_srt(r) == "" and to_vtt(r) == "WEBVTT\n" and to_tsv(r) == "start\tend\ttext\n"


# --- cue text rules -----------------------------------------------------------


def test_cue_text_is_stripped():
    r = make_result([seg(0, 0, 1, "   padded \n")])
    assert parse_srt(to_srt(r))[0][3] == "padded"
    assert parse_vtt(to_vtt(r))[0][2] == "padded"
    assert to_tsv(r).splitlines()[1] == "0\t1000\tpadded"


@pytest.mark.parametrize("text", ["a --> b", "a ---> b", "-->-->", "x-->"])
def test_arrow_in_text_does_not_break_cue(text):
    r = make_result([seg(0, 0, 1, text), seg(1, 1, 2, "next")])
    srt, vtt = to_srt(r), to_vtt(r)
    for out in (srt, vtt):
        timing_lines = [line for line in out.splitlines() if "-->" in line]
        assert len(timing_lines) == 2
    cues = parse_srt(srt)
    assert len(cues) == 2 and "->" in cues[0][3] and "-->" not in cues[0][3]
    assert len(parse_vtt(vtt)) == 2
    assert "a -> b" == to_srt(make_result([seg(0, 0, 1, "a --> b")])).splitlines()[2]


def test_blank_lines_in_text_do_not_split_cue():
    r = make_result([seg(0, 0, 1, "line one\n\n\r\nline two"), seg(1, 1, 2, "x")])
    cues = parse_srt(to_srt(r))
    assert [c[3] for c in cues] == ["line one\nline two", "x"]
    assert [c[2] for c in parse_vtt(to_vtt(r))] == ["line one\nline two", "x"]


def test_empty_segment_text_skipped_in_subtitles():
    r = make_result(
        [seg(0, 0, 1, "one"), seg(1, 1, 2, "   "), seg(2, 2, 3, ""), seg(3, 3, 4, "\n"), seg(4, 4, 5, "two")]
    )
    srt = parse_srt(to_srt(r))
    assert [(c[0], c[3]) for c in srt] == [(1, "one"), (2, "two")]  # numbering stays contiguous
    assert [c[2] for c in parse_vtt(to_vtt(r))] == ["one", "two"]
    only_empty = make_result([seg(0, 0, 1, " ")])
    assert to_srt(only_empty) == "" and to_vtt(only_empty) == "WEBVTT\n"


def test_vtt_escapes_markup_characters():
    r = make_result([seg(0, 0, 1, "a < b & c > d")])
    assert to_vtt(r).splitlines()[-1] == "a &lt; b &amp; c &gt; d"
    assert parse_vtt(to_vtt(r))[0][2] == "a < b & c > d"
    assert to_srt(r).splitlines()[2] == "a < b & c > d"  # SRT has no escaping


def test_tsv_replaces_tabs_and_newlines():
    r = make_result([seg(0, 0.0, 1.0, "a\tb\nc\r\nd\re")])
    lines = to_tsv(r).split("\n")
    assert lines[1] == "0\t1000\ta b c d e"
    assert all(line.count("\t") == 2 for line in lines if line)


def test_tsv_integer_ms_like_whisper():
    r = make_result([seg(0, 1.9996, 3725.5, "x"), seg(1, 3725.5, 3725.5004, "")])
    assert to_tsv(r).splitlines()[1:] == ["2000\t3725500\tx", "3725500\t3725500\t"]


# --- timing rules in renderers ---------------------------------------------------


def test_long_audio_timestamps():
    r = make_result([seg(0, 3725.5, 3730.25, "late")])
    assert "01:02:05,500 --> 01:02:10,250" in to_srt(r)
    assert "01:02:05.500 --> 01:02:10.250" in to_vtt(r)


def test_rounding_without_overflow_in_renderers():
    r = make_result([seg(0, 1.9996, 2.9995, "x")])
    assert "00:00:02,000 --> 00:00:03,000" in to_srt(r)
    assert "00:00:02.000 --> 00:00:03.000" in to_vtt(r)


def test_end_before_start_is_clamped():
    r = make_result([seg(0, 5.0, 4.0, "backwards")])
    assert "00:00:05,000 --> 00:00:05,000" in to_srt(r)
    assert "00:00:05.000 --> 00:00:05.000" in to_vtt(r)
    assert to_tsv(r).splitlines()[1] == "5000\t5000\tbackwards"


def test_negative_segment_time_rejected():
    r = make_result([seg(0, -1.0, 1.0, "bad")])
    for fmt in ("srt", "vtt", "tsv"):
        with pytest.raises(ValueError):
            render(r, fmt)


def test_out_of_order_segments_sorted_in_subtitles():
    r = make_result([seg(0, 2, 3, "b"), seg(1, 0, 1, "a")])
    assert [c[3] for c in parse_srt(to_srt(r))] == ["a", "b"]
    assert [c[2] for c in parse_vtt(to_vtt(r))] == ["a", "b"]
    # TSV keeps stored order so rows line up with segment ids
    assert [line.split("\t")[2] for line in to_tsv(r).splitlines()[1:]] == ["b", "a"]


# --- json ------------------------------------------------------------------------


def test_json_roundtrip_unicode_and_stable_order():
    r = make_result([seg(0, 0, 1, " Grüße, 世界 — ok")])
    out = to_json(r)
    assert "Grüße, 世界" in out  # ensure_ascii=False
    assert json.loads(out) == r
    shuffled = dict(reversed(list(r.items())))
    assert to_json(shuffled) == out  # key order independent of insertion order
    assert json.loads(to_json(SAMPLE))["segments"][0]["words"][0]["word"] == " Hello"


# --- round-trip parsing --------------------------------------------------------------


def random_result(seed, n=200):
    # Times are whole ms plus an offset well away from the .5 ms boundary, so
    # the expected rounding is unambiguous without reusing the module's logic.
    rng = random.Random(seed)
    segments, expected, t_ms = [], [], 0
    for i in range(n):
        t_ms += rng.randint(0, 40_000)  # crosses the hour mark, allows equal starts
        d_ms = rng.randint(0, 9_000)
        so, eo = rng.choice([0, 0.0003, -0.0004, 0.0004]), rng.choice([0, 0.0002, -0.0003])
        start = max(0.0, t_ms / 1000 + so)
        end = (t_ms + d_ms) / 1000 + eo
        exp_start = t_ms
        exp_end = max(exp_start, t_ms + d_ms)
        text = rng.choice([" plain words", " tricky --> arrow", "\ttabbed ", " <tag> & co", "  "])
        segments.append(seg(i, start, end, text))
        expected.append((exp_start, exp_end, text))
    return make_result(segments), expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_srt_vtt_round_trip(seed):
    result, expected = random_result(seed)
    kept = [(s, e) for s, e, text in expected if text.strip()]

    srt = parse_srt(to_srt(result))
    assert [c[0] for c in srt] == list(range(1, len(kept) + 1))
    assert [(c[1], c[2]) for c in srt] == kept
    starts = [c[1] for c in srt]
    assert starts == sorted(starts)
    assert all(c[2] >= c[1] for c in srt)
    assert max(c[2] for c in srt) > 3_600_000  # exercised the hour range

    vtt = parse_vtt(to_vtt(result))
    assert [(c[0], c[1]) for c in vtt] == kept
    assert [c[2] for c in vtt] == [c[3] for c in srt]
    assert all("-->" not in c[2] for c in vtt)

    tsv_rows = [line.split("\t") for line in to_tsv(result).splitlines()[1:]]
    assert [(int(a), int(b)) for a, b, _ in tsv_rows] == [(s, e) for s, e, _ in expected]
