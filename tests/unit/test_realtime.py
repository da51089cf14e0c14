"""Live transcription's pure parts: LocalAgreement, G.711 and resampling,
reading the protocol's events, server VAD's turns, and the gate that shares
the model between live decodes and batch jobs. The WebSocket itself is in
tests/unit/test_realtime_ws.py (in process) and tests/e2e/test_realtime_e2e.py."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest

from whisper_mcp.server.realtime import g711, protocol
from whisper_mcp.server.realtime.agreement import LocalAgreement, Word, words_of
from whisper_mcp.server.realtime.audio import Decoder, Resampler
from whisper_mcp.server.realtime.protocol import ProtocolError, SessionConfig, TurnDetection
from whisper_mcp.server.realtime.turns import Turns
from whisper_mcp.server.sharing import InferenceGate


def run(agreement: LocalAgreement, hypotheses: list[str], final: str) -> list[str]:
    deltas = []
    for text in hypotheses:
        new = agreement.hypothesis(words_of(text))
        if new:
            deltas.append(agreement.delta(new))
    rest = agreement.final(words_of(final))
    if rest:
        deltas.append(agreement.delta(rest))
    return deltas


def test_local_agreement_sends_what_two_decodes_agree_on() -> None:
    agreement = LocalAgreement()
    deltas = run(
        agreement,
        ["Hello", "Hello world, test", "Hello world, testing one", "Hello world, testing one two"],
        "Hello world, testing one two three.",
    )
    # Each decode's last word waits for the next decode to hear past it.
    assert deltas == ["Hello world,", " testing", " one two three."]
    assert "".join(deltas) == agreement.transcript == "Hello world, testing one two three."


def test_local_agreement_never_sends_a_word_the_audio_may_have_cut_off() -> None:
    agreement = LocalAgreement()
    # Two decodes cut inside "amiable" both heard "am": not sent until a decode hears past it.
    deltas = run(
        agreement,
        ["He might even have been made am", "He might even have been made am you"],
        "He might even have been made amiable himself.",
    )
    assert deltas == ["He might even have been made", " amiable himself."]


def test_local_agreement_keeps_what_was_sent_when_the_last_decode_disagrees() -> None:
    agreement = LocalAgreement()
    deltas = run(agreement, ["The cat sat", "The cat sat on"], "A cat sat on the mat.")
    assert deltas == ["The cat", " sat on the mat."]  # "A" was never sent: "The" stands
    assert "".join(deltas) == agreement.transcript == "The cat sat on the mat."


def test_the_last_decode_resumes_after_the_words_sent_it_also_heard() -> None:
    agreement = LocalAgreement()
    sent = run(
        agreement,
        ["Transcription service and should keep the model", "Transcription service and should keep the model low"],
        "",
    )
    assert agreement.transcript == "Transcription service and should keep the"
    rest = agreement.final(words_of("Transcription services should keep the model loaded. The meeting starts."))
    # "services" was heard as "service and": the words after "the" follow it, none lost, none twice.
    assert agreement.delta(rest) == " model loaded. The meeting starts."
    assert "".join([*sent, agreement.delta(rest)]) == agreement.transcript


def test_local_agreement_reads_past_case_and_punctuation_and_sends_the_later_spelling() -> None:
    agreement = LocalAgreement()
    deltas = run(
        agreement, ["Transcription. Services", "transcription services should keep..."], "Transcription services."
    )
    assert deltas == ["transcription", " services."]


def test_a_guess_that_repeats_itself_is_read_up_to_the_repetition() -> None:
    agreement = LocalAgreement()
    # Two guesses cut inside "not an" both looped: the loop is never sent.
    deltas = run(
        agreement,
        ["He was not. He was not. He was", "He was not. He was not. He was not. man"],
        "He was not an ill-disposed young man.",
    )
    assert deltas == ["He was", " not an ill-disposed young man."]
    # A word said twice is speech; three times in a guess, a loop.
    assert agreement.hypothesis(words_of("very very good")) == []
    agreement = LocalAgreement()
    guesses = ["very very good", "very very good day", "First, first, first, good", "First, first, first, good day"]
    assert [" ".join(w.text for w in agreement.hypothesis(words_of(g))) for g in guesses] == ["", "very very", "", ""]


def test_guesses_agree_only_when_far_enough_apart() -> None:
    agreement = LocalAgreement(span=9600)  # 0.6 s at 16 kHz
    # Two guesses 0.3 s apart, both cut just after "services", hear it alike: not sent.
    assert agreement.hypothesis(words_of("Transcription service and short"), heard=28800) == []
    assert agreement.hypothesis(words_of("Transcription service and short key"), heard=33600) == []
    # 0.6 s after the first: compared with it, not with the guess just before.
    new = agreement.hypothesis(words_of("Transcription services should keep the"), heard=38400)
    assert [w.text for w in new] == ["Transcription"]
    new = agreement.hypothesis(words_of("Transcription services should keep the model"), heard=48000)
    assert [w.text for w in new] == ["services", "should", "keep"]


def test_the_last_decode_resumes_after_its_best_match_with_what_was_sent() -> None:
    agreement = LocalAgreement()
    run(agreement, ["First, the release of the new", "First, the release of the new one"], "")
    rest = agreement.final(words_of("First, release on the new transcription service."))
    # "First, the release of the" sent is fewest edits from "First, release on the".
    assert agreement.delta(rest) == " new transcription service."
    agreement = LocalAgreement()
    run(agreement, ["Mr. John", "Mr. John Dash"], "")
    # "Mr." is as few edits from "And" as from "And Mr.": the match that ends on "Mr." wins.
    assert agreement.delta(agreement.final(words_of("And Mr. John Dashwood had"))) == " John Dashwood had"


def test_local_agreement_sends_nothing_while_decodes_disagree() -> None:
    agreement = LocalAgreement()
    assert agreement.hypothesis([Word("a")]) == []
    assert agreement.hypothesis([Word("b")]) == []
    assert agreement.final([]) == [] and agreement.transcript == ""


def test_g711_tables_hold_the_standard_values() -> None:
    ulaw, alaw = g711.ulaw_table(), g711.alaw_table()
    assert (ulaw[0x00], ulaw[0x80], ulaw[0xFF], ulaw[0x7F]) == (-32124, 32124, 0, 0)
    assert (alaw[0x00], alaw[0x80], alaw[0xD5], alaw[0x55]) == (-5504, 5504, 8, -8)
    assert (alaw.min(), alaw.max()) == (-32256, 32256)
    # Each half of the code space is monotonic (mu-law: 0x00..0x7F rising to 0).
    assert np.all(np.diff(ulaw[:128].astype(int)) > 0) and np.all(np.diff(ulaw[128:].astype(int)) < 0)
    assert list(g711.decode_ulaw(bytes([0x00, 0xFF]))) == [-32124, 0]


def test_audio_decodes_the_same_however_it_is_cut() -> None:
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(24000) * 3000).astype("<i2").tobytes()
    whole = Decoder("pcm16").push(pcm)
    decoder = Decoder("pcm16")
    cut = np.concatenate([decoder.push(pcm[i : i + 4801]) for i in range(0, len(pcm), 4801)])
    assert len(whole) == 16000 and np.array_equal(cut, whole)
    up = Resampler(8000).push(np.array([0.0, 1.0, 0.0], np.float32))
    assert list(up) == [0.0, 0.5, 1.0, 0.5]


def event(**fields: object) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1]", "invalid_json", None),
        (event(type="response.create"), "invalid_event_type", "type"),
        (event(event_id="e1"), "missing_required_parameter", "type"),
        (event(type="input_audio_buffer.append", audio="***"), "invalid_value", "audio"),
        (event(type="input_audio_buffer.append"), "invalid_value", "audio"),
        (event(type="session.update", session=[]), "invalid_value", "session"),
    ],
)
def test_bad_events_say_what_is_wrong(message: str, code: str, param: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.read_event(message)
    assert (caught.value.code, caught.value.param) == (code, param)
    assert caught.value.message


def test_an_append_is_read_and_errors_carry_the_event_id() -> None:
    read = protocol.read_event(event(type="input_audio_buffer.append", audio=base64.b64encode(b"ab").decode()))
    assert read.audio == b"ab"
    with pytest.raises(ProtocolError) as caught:
        protocol.read_event(event(type="input_audio_buffer.append", event_id="ev1", audio=1))
    shaped = protocol.error(caught.value)
    assert shaped["type"] == "error" and shaped["error"]["event_id"] == "ev1"
    assert shaped["error"]["type"] == "invalid_request_error"


def test_session_update_in_both_shapes() -> None:
    config = protocol.update(
        SessionConfig(),
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "de", "prompt": "Hallo"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 800},
                    "noise_reduction": {"type": "near_field"},
                }
            },
            "include": [protocol.LOGPROBS],
        },
        legacy=False,
    )
    assert config == SessionConfig(
        format="g711_ulaw",
        model=None,
        language="de",
        prompt="Hallo",
        turn_detection=TurnDetection(threshold=0.6, silence_duration_ms=800),
        noise_reduction="near_field",
        logprobs=True,
    )
    shaped = protocol.session_object(config, "sess_1", legacy=False)
    assert shaped["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    legacy = protocol.update(
        config,
        {"input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "base"}, "turn_detection": None},
        legacy=True,
    )
    assert (legacy.format, legacy.model, legacy.turn_detection, legacy.language) == ("g711_alaw", "base", None, "de")
    assert protocol.session_object(legacy, "s", legacy=True)["input_audio_format"] == "g711_alaw"


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime"}, "session.type"),
        ({"type": "transcription", "voice": "alloy"}, "session.voice"),
        ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, None),
        ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}, None),
        ({"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 2}}}}, None),
        ({"type": "transcription", "include": ["other"]}, "session.include"),
    ],
)
def test_bad_session_fields_are_named(session: dict[str, object], param: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.update(SessionConfig(), session, legacy=False)
    assert caught.value.param is not None
    if param is not None:
        assert caught.value.param == param


def test_turns_start_at_speech_and_stop_after_the_silence() -> None:
    turns = Turns(threshold=0.5, silence_ms=100)
    probabilities = np.array([0.1, 0.9, 0.9, 0.5, 0.9, 0.1, 0.1, 0.1, 0.1, 0.8])
    found = [(t.kind, t.ms) for t in turns.push(probabilities[:3])] + [
        (t.kind, t.ms) for t in turns.push(probabilities[3:])
    ]
    # 0.5 is above threshold - hysteresis: still speech; silence from frame 5 (160 ms) for 4 frames.
    assert found == [("started", 32), ("stopped", 160), ("started", 288)]


def test_the_gate_lets_a_waiting_live_decode_in_between_windows() -> None:
    gate = InferenceGate()
    order: list[str] = []
    with gate.batch():

        def live() -> None:
            with gate.live():
                order.append("live")

        thread = threading.Thread(target=live)
        thread.start()
        time.sleep(0.3)  # past the batch's slice
        order.append("window 1")
        gate.between_windows()  # the live decode runs here
        order.append("window 2")
        thread.join(5)
    assert order == ["window 1", "live", "window 2"]
    assert gate.batch_yields == 1 and gate.live_decodes == 1


def test_the_gate_lets_an_utterances_last_decode_go_first() -> None:
    gate = InferenceGate()
    order: list[str] = []

    def live(name: str, urgent: bool) -> None:
        with gate.live(urgent=urgent):
            order.append(name)

    with gate.live():  # a decode in progress; a growing utterance's waits, then a last one
        growing = threading.Thread(target=live, args=("growing", False))
        growing.start()
        time.sleep(0.1)
        last = threading.Thread(target=live, args=("last", True))
        last.start()
        time.sleep(0.1)
    growing.join(5)
    last.join(5)
    assert order == ["last", "growing"]


def test_an_utterances_last_decode_does_not_wait_for_the_batchs_turn() -> None:
    gate = InferenceGate()
    order: list[str] = []

    def finish_last() -> None:
        with gate.live(urgent=True):
            order.append("last")

    def growing() -> None:
        with gate.live():
            order.append("growing")
            last.start()  # an utterance ends while this decode runs
            time.sleep(0.1)

    last = threading.Thread(target=finish_last)
    with gate.batch():
        thread = threading.Thread(target=growing)
        thread.start()
        time.sleep(0.3)  # past the batch's slice
        gate.between_windows()  # the growing decode, then the last one before the batch's turn
        order.append("window")
    thread.join(5)
    last.join(5)
    assert order == ["growing", "last", "window"]


def test_the_gate_gives_the_batch_a_window_between_two_live_decodes() -> None:
    gate = InferenceGate()
    order: list[str] = []

    def live() -> None:
        with gate.live():
            order.append("live")
            time.sleep(0.05)

    with gate.batch():
        threads = [threading.Thread(target=live) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # both wait; the batch has had its slice
        gate.between_windows()
        order.append("window")
    for thread in threads:
        thread.join(5)
    assert order == ["live", "window", "live"]
