"""Upload decoding: every accepted container/codec, channel counts and rates, and each failure's error type.

Test media are encoded here with PyAV itself, so these tests need neither ffmpeg nor espeak.
"""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest

from stream_server.errors import AudioFormatError, LimitExceeded, UnsupportedFormat
from stream_server.media import SAMPLE_RATE, decode_audio

TONE_HZ = 440.0


def encode_tone(
    container_format: str, codec: str, *, rate: int = 44100, channels: int = 1, seconds: float = 2.0
) -> bytes:
    """A 440 Hz tone (left channel; others silent) in the given container and codec, as bytes."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    planes = np.zeros((channels, len(tone)), dtype=np.float32)
    planes[0] = tone
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else ("stereo" if channels == 2 else f"{channels}c")
        frame_size = stream.codec_context.frame_size or 1024
        fmt = stream.codec_context.format.name
        for offset in range(0, len(tone), frame_size):
            chunk = planes[:, offset : offset + frame_size]
            frame = _frame(chunk, fmt, stream.layout.name, rate)
            frame.pts = offset
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _frame(chunk: np.ndarray, fmt: str, layout: str, rate: int) -> av.AudioFrame:
    if fmt in ("s16", "s16p"):
        data = (chunk * 32767).astype(np.int16)
    elif fmt in ("s32", "s32p"):
        data = (chunk * 2**31 - 1).astype(np.int32)
    else:
        data = chunk
    if not fmt.endswith("p"):
        data = data.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio[:SAMPLE_RATE]))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio[:SAMPLE_RATE]))


FORMATS = [
    ("wav", "pcm_s16le", "speech.wav"),
    ("flac", "flac", "speech.flac"),
    ("mp3", "libmp3lame", "speech.mp3"),
    ("ogg", "flac", "speech.ogg"),
    ("mpeg", "mp2", "speech.mpeg"),
    ("ogg", "libopus", "speech.opus"),
    ("mp4", "aac", "speech.m4a"),
    ("webm", "libopus", "speech.webm"),
]


@pytest.mark.parametrize(("container_format", "codec", "name"), FORMATS)
def test_formats_decode_to_16k_mono(container_format: str, codec: str, name: str) -> None:
    rate = 48000 if codec == "libopus" else 44100
    data = encode_tone(container_format, codec, rate=rate, channels=2)
    audio = decode_audio(io.BytesIO(data), filename=name, max_duration_s=60)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - 2.0) < 0.1  # codecs add a few ms of priming/padding
    assert abs(dominant_hz(audio) - TONE_HZ) < 2.0
    assert np.abs(audio).max() <= 1.0


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (22050, 2), (48000, 6)])
def test_any_rate_and_channel_count(rate: int, channels: int) -> None:
    data = encode_tone("wav", "pcm_s16le", rate=rate, channels=channels, seconds=1.5)
    audio = decode_audio(io.BytesIO(data), filename="x.wav", max_duration_s=60)
    assert abs(len(audio) - 1.5 * SAMPLE_RATE) <= 2
    assert abs(dominant_hz(audio) - TONE_HZ) < 2.0


class CountingReader(io.BytesIO):
    """Records how far into the file the decoder read."""

    max_position = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.max_position = max(self.max_position, self.tell())
        return data


def test_duration_cap_is_checked_while_decoding() -> None:
    data = encode_tone("flac", "flac", rate=16000, seconds=60.0)
    reader = CountingReader(data)
    with pytest.raises(LimitExceeded) as info:
        decode_audio(reader, filename="long.flac", max_duration_s=5.0)
    assert info.value.http_status == 413 and "5 seconds" in info.value.message
    assert reader.max_position < len(data) / 3  # stopped long before the end of the file


def test_exactly_at_the_cap_is_accepted() -> None:
    data = encode_tone("wav", "pcm_s16le", rate=16000, seconds=3.0)
    assert len(decode_audio(io.BytesIO(data), filename="a.wav", max_duration_s=3.0)) == 3 * SAMPLE_RATE


def test_empty_file() -> None:
    with pytest.raises(AudioFormatError, match="empty"):
        decode_audio(io.BytesIO(b""), filename="a.mp3", max_duration_s=60)


def test_corrupt_file_with_an_audio_name() -> None:
    garbage = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    with pytest.raises(AudioFormatError, match="corrupt") as info:
        decode_audio(io.BytesIO(garbage), filename="a.wav", max_duration_s=60)
    assert info.value.http_status == 400 and info.value.param == "file"


def test_text_file_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="Supported formats"):
        decode_audio(io.BytesIO(b"just some text\n" * 100), filename="notes.txt", max_duration_s=60)


def _png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_image_is_refused_by_the_demuxer_whitelist() -> None:
    with pytest.raises(UnsupportedFormat):
        decode_audio(io.BytesIO(_png()), filename="photo.mp3", max_duration_s=60)


def test_playlist_never_opens_other_files() -> None:
    playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    with pytest.raises((UnsupportedFormat, AudioFormatError)):
        decode_audio(io.BytesIO(playlist), filename="list.m3u8", max_duration_s=60)


def test_video_without_audio_is_unsupported() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(UnsupportedFormat, match="no audio"):
        decode_audio(io.BytesIO(buffer.getvalue()), filename="clip.mp4", max_duration_s=60)


def test_truncated_file_keeps_the_audio_before_the_damage() -> None:
    data = encode_tone("mp3", "libmp3lame", rate=44100, seconds=4.0)
    audio = decode_audio(io.BytesIO(data[: len(data) // 2]), filename="cut.mp3", max_duration_s=60)
    assert 1.5 < len(audio) / SAMPLE_RATE < 2.5
