"""Section realtime's speech cut into utterances as server VAD cuts it
(threshold 0.5, 500 ms of silence, 300 ms of prefix, long speech split at
its first 150 ms pause past 25 s), each decoded alone as an utterance's last
decode is; its WER against what is said. Beside section realtime's live WER,
it tells the words its guesses sent apart from where the utterances begin
and end.

``python bench/utterances_alone.py [--quick]``: prints the utterance count
and the WER.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.context import Ctx  # noqa: E402
from bench.sections.realtime import utterances  # noqa: E402
from bench.wer import wer  # noqa: E402


def main(quick: bool) -> None:
    from whisper_mcp.config import Settings, default_model_cache
    from whisper_mcp.engines.base import BatchItem
    from whisper_mcp.engines.vad import SpeechProbabilities
    from whisper_mcp.models.registry import ModelRegistry
    from whisper_mcp.options import TranscribeOptions
    from whisper_mcp.server.realtime.turns import Turns
    from whisper_mcp.transcriber import Transcriber, default_threads

    with tempfile.TemporaryDirectory() as workdir:
        speech, said = utterances(Ctx(workdir=Path(workdir), quick=quick))
    detector, turns = SpeechProbabilities(), Turns(0.5, 500)
    cuts: list[tuple[int, int]] = []
    start: int | None = None
    step = 1600  # 100 ms, as the bench's client appends
    for i in range(0, len(speech), step):
        for turn in turns.push(detector.push(speech[i : i + step])):
            if turn.kind == "started":
                start = max(0, (turn.ms - 300) * 16)
            elif start is not None:
                cuts.append((start, turn.ms * 16))
                start = None
        if start is not None and turns.quiet_since is not None and turns.quiet_ms >= 150:
            if i + step - start >= 25 * 16000:
                cuts.append((start, turns.quiet_since * 16))
                start = turns.quiet_since * 16
    defaults = Settings()
    engine = Transcriber(
        ModelRegistry(default_model_cache(), engine="ctranslate2"), "cpu", default_threads(),
        encoder_compute_type=defaults.encoder_compute_type, decoder_threads=defaults.decoder_threads,
        default_beam_size=defaults.default_beam_size,
    )  # fmt: skip
    info = engine.registry.resolve("tiny.en")
    options = TranscribeOptions(language="en")
    texts = []
    for a, b in cuts:
        outcome = engine.transcribe_batch([BatchItem(speech[a:b])], info, options)[0]
        assert not isinstance(outcome, Exception), outcome
        texts.append(outcome.text)
    print(f"{len(cuts)} utterances; decoded alone: WER {100 * wer([(said, ' '.join(texts))]):.1f} %")


if __name__ == "__main__":
    main("--quick" in sys.argv[1:])
