"""Diarization's pure parts: words to speaker turns, the option checks, the
formats' speaker labels, and bad hints refused over REST (fake engine). The
real model is tested in tests/e2e/test_diarization_e2e.py."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from whisper_mcp.diarization.assign import Turn, assign_speakers, relabel, speaker_at, speaker_turns
from whisper_mcp.engines.base import Segment, Transcription, Word
from whisper_mcp.errors import InvalidInput
from whisper_mcp.formats import render
from whisper_mcp.options import TranscribeOptions, parse_options

from helpers import FIXTURES

TURNS = [Turn("A", 0.0, 2.0), Turn("B", 2.0, 4.0), Turn("A", 4.5, 6.0)]


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(w, s, e, 0.9) for w, s, e in spec]


def test_a_word_goes_to_the_turn_it_overlaps_most_or_the_nearest() -> None:
    assert speaker_at(TURNS, 1.5, 2.2) == "A"
    assert speaker_at(TURNS, 1.9, 2.6) == "B"
    assert speaker_at(TURNS, 4.1, 4.2) == "B"  # in the gap, nearer B's end
    assert speaker_at(TURNS, 4.35, 4.45) == "A"  # in the gap, nearer A's start
    assert speaker_at(TURNS, 9.0, 9.5) == "A"  # after everything
    assert speaker_at([], 0.0, 1.0) is None


def test_segments_split_where_the_speaker_changes() -> None:
    segment = Segment(
        0,
        0.5,
        5.0,
        "Hello there. Hi! Yes.",
        words((" Hello", 0.5, 1.0), (" there.", 1.0, 1.8), (" Hi!", 2.2, 3.0), (" Yes.", 4.6, 5.0)),
    )
    out = assign_speakers([segment, Segment(1, 5.0, 5.5, "", None)], TURNS, keep_words=False)
    assert [(s.id, s.speaker, s.start, s.end, s.text) for s in out] == [
        (0, "A", 0.5, 1.8, "Hello there."),
        (1, "B", 2.2, 3.0, "Hi!"),
        (2, "A", 4.6, 5.0, "Yes."),
    ]
    assert all(s.words is None for s in out)
    kept = assign_speakers([segment], TURNS, keep_words=True)
    assert [len(s.words or []) for s in kept] == [2, 1, 1]
    assert speaker_turns(out)[0] == {"speaker": "A", "start": 0.5, "end": 1.8, "text": "Hello there."}


def test_pieces_keep_the_decoder_figures_of_their_segment() -> None:
    segment = Segment(
        0,
        0.5,
        3.0,
        "Hello there. Hi!",
        words((" Hello", 0.5, 1.0), (" there.", 1.0, 1.8), (" Hi!", 2.2, 3.0)),
        seek=0,
        tokens=[1, 2, 3],
        avg_logprob=-0.2,
        no_speech_prob=0.01,
    )
    split = assign_speakers([segment], TURNS, keep_words=False)
    assert [(s.speaker, s.seek, s.tokens, s.avg_logprob, s.no_speech_prob) for s in split] == [
        ("A", 0, None, -0.2, 0.01),
        ("B", 0, None, -0.2, 0.01),
    ]
    whole = assign_speakers([replace(segment, words=segment.words[:2], end=1.8)], TURNS, keep_words=False)
    assert [(s.speaker, s.tokens) for s in whole] == [("A", [1, 2, 3])]


def test_a_segment_without_words_takes_the_speaker_of_its_span() -> None:
    out = assign_speakers([Segment(0, 2.1, 3.9, "Hi", None)], TURNS, keep_words=False)
    assert [(s.speaker, s.text) for s in out] == [("B", "Hi")]


def test_labels_follow_first_appearance_or_given_names() -> None:
    senko = [Turn("SPEAKER_02", 3.0, 4.0), Turn("SPEAKER_01", 0.0, 1.0), Turn("SPEAKER_02", 1.0, 2.0)]
    turns, mapping = relabel(senko)
    assert [t.speaker for t in turns] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_01"]
    assert mapping == {"SPEAKER_01": "SPEAKER_00", "SPEAKER_02": "SPEAKER_01"}
    named, _ = relabel(senko, {"SPEAKER_02": "Ana"})
    assert [t.speaker for t in named] == ["SPEAKER_00", "Ana", "Ana"]
    first_named, _ = relabel(senko, {"SPEAKER_01": "Ana"})  # the others numbered from 00
    assert [t.speaker for t in first_named] == ["Ana", "SPEAKER_00", "SPEAKER_00"]


def test_options_diarization_and_hints() -> None:
    options = parse_options("tiny.en", diarize="true", min_speakers="2", max_speakers=3)
    assert (options.diarize, options.min_speakers, options.max_speakers) == (True, 2, 3)
    assert TranscribeOptions.from_json(options.to_json()) == options
    # Off: the stored form (and the cache key) is what it was before diarization existed.
    assert "diarize" not in parse_options("tiny.en").to_json()


@pytest.mark.parametrize(
    ("fields", "words_in_error"),
    [
        ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "more than max_speakers"),
        ({"diarize": "true", "num_speakers": "0"}, "from 1 to 15"),
        ({"diarize": "true", "max_speakers": "100"}, "from 1 to 15"),
        ({"diarize": "true", "num_speakers": "two"}, "whole number"),
        ({"diarize": "true", "num_speakers": "4", "max_speakers": "3"}, "outside"),
        ({"num_speakers": "2"}, "only apply with diarize=true"),
        ({"diarize": "maybe"}, "true or false"),
    ],
)
def test_bad_hints_are_refused(fields: dict[str, str], words_in_error: str) -> None:
    with pytest.raises(InvalidInput, match=words_in_error):
        parse_options("tiny.en", **fields)


def test_bad_hints_get_a_400_over_rest(fake_client: httpx.Client) -> None:
    with open(FIXTURES / "short.wav", "rb") as f:
        answer = fake_client.post(
            "/transcribe",
            files={"file": ("short.wav", f)},
            data={"diarize": "true", "min_speakers": "3", "max_speakers": "2"},
        )
    assert answer.status_code == 400
    assert "min_speakers (3) is more than max_speakers (2)" in answer.text


DIARIZED = Transcription(
    "Hello there. Hi!",
    "en",
    3.0,
    [
        Segment(0, 0.5, 1.8, "Hello there.", None, speaker="SPEAKER_00"),
        Segment(1, 2.2, 3.0, "Hi!", None, speaker="SPEAKER_01"),
    ],
    diarization={"speakers": ["SPEAKER_00", "SPEAKER_01"], "num_speakers": 2, "turns": []},
).to_dict()


def test_every_format_carries_the_speakers() -> None:
    assert render(DIARIZED, "txt") == "SPEAKER_00: Hello there.\n\nSPEAKER_01: Hi!\n"
    assert "[SPEAKER_01] Hi!" in render(DIARIZED, "srt")
    assert "<v SPEAKER_00>Hello there." in render(DIARIZED, "vtt")
    assert render(DIARIZED, "tsv").splitlines()[:2] == [
        "start\tend\tspeaker\ttext",
        "500\t1800\tSPEAKER_00\tHello there.",
    ]
    assert '"num_speakers": 2' in render(DIARIZED, "json")
    assert '"speaker": "SPEAKER_01"' in render(DIARIZED, "json")


def test_undiarized_results_are_rendered_as_before() -> None:
    plain = Transcription("Hi", "en", 1.0, [Segment(0, 0.0, 1.0, "Hi", None)]).to_dict()
    assert "speaker" not in plain["segments"][0] and "num_speakers" not in plain
    assert render(plain, "tsv") == "start\tend\ttext\n0\t1000\tHi\n"
    assert render(plain, "txt") == "Hi\n"


def test_the_client_cli_asks_for_diarization(fake_server, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from whisper_mcp.client.cli import add_client_commands, run_client_command
    from whisper_mcp.client.http import ServiceClient

    parser = argparse.ArgumentParser(prog="whisper-mcp")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    argv = ["transcribe", str(FIXTURES / "short.wav"), "--url", fake_server.url, "--no-wait", "--no-cache"]
    assert run_client_command(parser.parse_args([*argv, "--diarize", "--max-speakers", "3"])) == 0
    job_id = capsys.readouterr().out.strip()
    with ServiceClient(fake_server.url) as client:
        record = client.wait(job_id, poll=0.05, timeout=10)
    assert record["options"] == {"task": "transcribe", "diarize": True, "max_speakers": 3}
    # A hint without --diarize is the service's clear refusal, not ignored.
    assert run_client_command(parser.parse_args([*argv, "--num-speakers", "2"])) != 0
    assert "only apply with diarize=true" in capsys.readouterr().err


def test_watch_job_ids_change_with_diarization() -> None:
    from whisper_mcp.client.watch import job_id_for

    plain = job_id_for("a.wav", "0" * 64, {"model": "tiny.en"})
    assert plain == job_id_for("a.wav", "0" * 64, {"model": "tiny.en", "diarize": None})
    assert plain != job_id_for("a.wav", "0" * 64, {"model": "tiny.en", "diarize": True})


def test_openai_diarized_json_shape() -> None:
    from whisper_mcp.server.http.diarized import diarized_json, speaker_letter

    assert [speaker_letter(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
    body = diarized_json(DIARIZED)
    assert body["task"] == "transcribe" and body["usage"] == {"type": "duration", "seconds": 3.0}
    assert body["segments"][1] == {
        "id": "seg_001",
        "start": 2.2,
        "end": 3.0,
        "speaker": "B",
        "text": "Hi!",
        "type": "transcript.text.segment",
    }


@pytest.mark.anyio
async def test_transcribe_wav_takes_diarize_and_refuses_bad_hints(fake_server) -> None:
    import base64

    from fastmcp import Client
    from fastmcp.exceptions import ToolError

    audio = base64.b64encode((FIXTURES / "short.wav").read_bytes()).decode()
    async with Client(f"{fake_server.url}/mcp") as client:
        record = await client.call_tool(
            "transcribe_wav", {"audio_base64": audio, "diarize": True, "num_speakers": 2, "cache": False}
        )
        assert record.structured_content["options"]["diarize"] is True
        assert record.structured_content["options"]["num_speakers"] == 2
        with pytest.raises(ToolError, match="more than max_speakers"):
            await client.call_tool(
                "transcribe_wav", {"audio_base64": audio, "diarize": True, "min_speakers": 4, "max_speakers": 2}
            )


def test_a_result_outside_the_hints_says_so() -> None:
    from whisper_mcp.diarization.senko import SpeakerHints, _notes

    assert _notes(SpeakerHints(num_speakers=2), 2) == []
    assert _notes(SpeakerHints(), 7) == []
    assert "asked for 3 speakers but found 2" in _notes(SpeakerHints(num_speakers=3), 2)[0]
    assert "asked for 2 to 15 speakers but found 1" in _notes(SpeakerHints(min_speakers=2), 1)[0]
    assert _notes(SpeakerHints(min_speakers=2, max_speakers=4), 3) == []
