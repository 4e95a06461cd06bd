"""PCM decoding with arbitrary chunking, and stateful resampling."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.audio import PcmDecoder, Resampler
from stream_server.errors import AudioFormatError


def test_pcm16_split_anywhere_reassembles_exactly():
    frames = (np.arange(-500, 500, dtype="<i2") * 30).reshape(-1, 2)
    data = frames.tobytes()
    decoder = PcmDecoder("pcm_s16le", 2)
    parts = [decoder.decode(data[i : i + 7]) for i in range(0, len(data), 7)]
    out = np.concatenate(parts)
    np.testing.assert_allclose(out, frames / 32768.0)
    assert decoder.pending_bytes == 0


def test_f32_rejects_nan_and_clips():
    decoder = PcmDecoder("pcm_f32le", 1)
    out = decoder.decode(np.array([0.5, 2.0, -3.0], dtype="<f4").tobytes())
    assert out.reshape(-1).tolist() == [0.5, 1.0, -1.0]
    with pytest.raises(AudioFormatError):
        decoder.decode(np.array([np.nan], dtype="<f4").tobytes())


def test_unknown_encoding():
    with pytest.raises(AudioFormatError):
        PcmDecoder("mulaw", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_in_chunks_equals_resampling_at_once(rate):
    t = np.arange(rate * 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    chunked = Resampler(rate)
    y = np.concatenate([chunked(x[i : i + 777]) for i in range(0, len(x), 777)] + [chunked.flush()])
    whole = Resampler(rate)
    z = np.concatenate([whole(x), whole.flush()])
    assert len(y) == pytest.approx(32000, abs=2)
    np.testing.assert_allclose(y, z, atol=1e-6)
    # still a 440 Hz tone: the spectrum peaks there
    spectrum = np.abs(np.fft.rfft(y[1000:17000]))
    assert np.argmax(spectrum) * 16000 / 16000 == pytest.approx(440, abs=2)
