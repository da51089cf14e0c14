"""How long a decoding window is encoded (engines.windows), and the
pad_or_trim hook that asks it (compat.patching.report_windows)."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from whisper_mcp.compat.patching import report_windows
from whisper_mcp.engines import windows


@pytest.mark.parametrize(
    ("frames", "length"),
    [(0, 1000), (239, 1000), (756, 1000), (800, 1000), (801, 2000), (1513, 2000), (1801, 3000), (2999, 3000),
     (3000, 3000)],
)  # fmt: skip
def test_a_window_is_its_audio_and_two_seconds_of_silence_in_ten_second_steps(frames: int, length: int) -> None:
    assert windows.fitted(frames) == length
    assert windows.fitted(frames) - frames >= min(windows.SILENCE_FRAMES, windows.FULL_FRAMES - frames)


def library_module() -> types.ModuleType:
    """A stand-in for faster-whisper's module: its own pad_or_trim (to 3000 by default)."""

    def pad_or_trim(array: np.ndarray, length: int = 3000, *, axis: int = -1) -> np.ndarray:
        return np.pad(array[..., :length], [(0, 0)] * (array.ndim - 1) + [(0, max(0, length - array.shape[-1]))])

    return types.SimpleNamespace(pad_or_trim=pad_or_trim)  # type: ignore[return-value]


def test_the_hook_pads_to_the_fitted_length_only_where_this_thread_fits() -> None:
    module = library_module()
    started: list[int] = []
    report_windows(module, started.append, windows.window_frames)  # type: ignore[arg-type]
    features = np.ones((80, 756), dtype=np.float32)
    assert module.pad_or_trim(features).shape == (80, 3000)  # the library's own outside fitting()
    with windows.fitting():
        assert module.pad_or_trim(features).shape == (80, 1000)
        assert module.pad_or_trim(features, 3000).shape == (80, 3000)  # a length asked for is kept
        other: list[tuple[int, ...]] = []
        thread = threading.Thread(target=lambda: other.append(module.pad_or_trim(features).shape))
        thread.start()
        thread.join()
        assert other == [(80, 3000)]  # another thread's windows are its own business
        with windows.fitting(False):
            assert module.pad_or_trim(features).shape == (80, 3000)
        assert module.pad_or_trim(features).shape == (80, 1000)
    assert module.pad_or_trim(features).shape == (80, 3000)
    padded = module.pad_or_trim(np.full((80, 5), 2.0, dtype=np.float32))
    assert started[-1] == 5 and padded[:, :5].tolist() == [[2.0] * 5] * 80 and not padded[:, 5:].any()


def test_the_hooked_pad_or_trim_keeps_the_library_signature_its_check_reads() -> None:
    """The compat check (``pad_or_trim(array, length)``) looks at the function
    a process may already have hooked: it must still see the library's."""
    import inspect

    module = library_module()
    report_windows(module, lambda frames: None, windows.window_frames)  # type: ignore[arg-type]
    assert list(inspect.signature(module.pad_or_trim).parameters)[:2] == ["array", "length"]


def test_a_padded_block_pads_every_window_whatever_fitting_says_within_it() -> None:
    """Live transcription decodes inside ``padded``: the backend's own
    ``fitting`` within it pads to 30 s all the same."""
    with windows.padded():
        with windows.fitting():
            assert windows.window_frames(756) is None
    with windows.fitting():
        assert windows.window_frames(756) == 1000
