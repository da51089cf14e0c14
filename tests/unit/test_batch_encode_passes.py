"""Short jobs batched on the ctranslate2 engine: the encoder takes a few
windows a call (each holds its attention scores), the decoder all of one
length and options in one call, and each job gets back its own window's
encoder output."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from whisper_mcp.engines import ctranslate2_batch
from whisper_mcp.engines.ctranslate2_batch import FirstWindow


class FakeModel:
    """Encodes a window to its first frame's value; answers each prompt with its token."""

    def __init__(self) -> None:
        self.encoded: list[int] = []
        self.generated: list[int] = []

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        import ctranslate2

        batch = np.asarray(features)
        self.encoded.append(len(batch))
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(batch[:, :1, :4] + 0.5, dtype=np.float32))

    def generate(self, encoded: Any, prompts: list[list[int]], **kwargs: Any) -> list[int]:
        self.generated.append(len(prompts))
        return [p[0] for p in prompts]


@pytest.mark.parametrize(("per_encode", "calls"), [(0, [5]), (2, [2, 2, 1]), (4, [4, 1])])
def test_encoder_passes_are_capped_and_the_decode_is_one(per_encode: int, calls: list[int]) -> None:
    pytest.importorskip("ctranslate2")
    model = FakeModel()
    firsts = [FirstWindow(np.full((80, 3000), float(i), dtype=np.float32), [i], {"beam_size": 2}) for i in range(5)]
    ctranslate2_batch.decode_batch(SimpleNamespace(model=model), firsts, per_encode)
    assert (model.encoded, model.generated) == (calls, [5])
    for i, first in enumerate(firsts):
        assert first.result == i
        assert np.asarray(first.encoder_output).tolist() == [[[i + 0.5] * 4]]


def test_windows_of_different_lengths_are_decoded_apart() -> None:
    pytest.importorskip("ctranslate2")
    model = FakeModel()
    lengths = [1000, 2000, 1000, 3000, 2000]
    firsts = [
        FirstWindow(np.full((80, n), float(i), dtype=np.float32), [i], {"beam_size": 2}) for i, n in enumerate(lengths)
    ]
    ctranslate2_batch.decode_batch(SimpleNamespace(model=model), firsts, 1)
    assert model.encoded == [1] * 5 and sorted(model.generated) == [1, 2, 2]
    assert [first.result for first in firsts] == list(range(5))
