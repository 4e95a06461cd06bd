"""The ring of recent 16-bit audio that acoustic context reads from."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.session.history import AudioHistory


def test_audio_history_keeps_the_newest_samples_by_absolute_index():
    history = AudioHistory(seconds=0.001)  # 16 samples
    sent = (np.arange(-20, 20, dtype=np.int16) * 1000).astype(np.float32) / 32768
    for chunk in np.array_split(sent, 7):  # wraps around the ring several times
        history.push(chunk)
    assert (history.start, history.end) == (24, 40)
    np.testing.assert_array_equal(history.audio(24, 40), sent[24:40])  # 16-bit audio comes back exactly
    np.testing.assert_array_equal(history.audio(30, 33), sent[30:33])
    with pytest.raises(ValueError):
        history.audio(20, 30)  # already overwritten
    history.push(np.ones(100, dtype=np.float32) * 2.0)  # one push larger than the ring; clipped to full scale
    assert (history.start, history.end) == (124, 140)
    assert np.all(history.audio(124, 140) == 32767 / 32768)


def test_audio_history_starts_empty_and_holds_what_arrived():
    history = AudioHistory(seconds=1.0)
    assert (history.start, history.end) == (0, 0)
    assert len(history.audio(0, 0)) == 0
    sent = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    history.push(sent)
    assert (history.start, history.end) == (0, 800)
    np.testing.assert_allclose(history.audio(0, 800), sent, atol=1 / 32768)  # 16-bit rounding only
    with pytest.raises(ValueError):
        history.audio(700, 900)  # not arrived yet


def test_audio_history_of_less_than_a_sample_still_holds_one():
    history = AudioHistory(seconds=0.0)
    history.push(np.array([0.25, 0.5], dtype=np.float32))
    assert (history.start, history.end) == (1, 2)
    np.testing.assert_array_equal(history.audio(1, 2), np.array([0.5], dtype=np.float32))
