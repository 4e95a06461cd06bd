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
from stream_server.media import SAMPLE_RATE, decode_audio, pcm16_to_float32

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


def encode_many_channels(container_format: str, *, rate: int, channels: int, seconds: float) -> bytes:
    """The tone in channel 0 of a WAV (soundfile writes any channel count; PyAV's encoder knows layouts up
    to 8 channels only), remuxed into ``container_format`` unless that is WAV."""
    import soundfile as sf

    t = np.arange(int(rate * seconds)) / rate
    planes = np.zeros((len(t), channels), dtype=np.float32)
    planes[:, 0] = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    wav = io.BytesIO()
    sf.write(wav, planes, rate, format="WAV", subtype="PCM_16")
    if container_format == "wav":
        return wav.getvalue()
    wav.seek(0)
    remuxed = io.BytesIO()
    with av.open(wav) as source, av.open(remuxed, "w", format=container_format) as target:
        stream = target.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return remuxed.getvalue()


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
    assert audio.dtype == np.int16 and audio.ndim == 1  # held as int16: half of float32
    assert abs(len(audio) / SAMPLE_RATE - 2.0) < 0.1  # codecs add a few ms of priming/padding
    assert abs(dominant_hz(audio) - TONE_HZ) < 2.0
    assert 0.1 < np.abs(pcm16_to_float32(audio)).max() <= 1.0


@pytest.mark.parametrize(
    ("container_format", "rate", "channels"),
    [
        ("wav", 8000, 1),
        ("wav", 16000, 1),
        ("wav", 22050, 2),
        ("wav", 48000, 6),
        # issue 18 finding 9: more than 8 channels were refused as "corrupt" (FFmpeg knows no such layout)
        ("wav", 16000, 9),
        ("matroska", 48000, 9),
        ("wav", 48000, 32),
        ("wav", 16000, 64),
    ],
)
def test_any_rate_and_channel_count(container_format: str, rate: int, channels: int) -> None:
    if channels > 8:
        data = encode_many_channels(container_format, rate=rate, channels=channels, seconds=1.5)
    else:
        data = encode_tone(container_format, "pcm_s16le", rate=rate, channels=channels, seconds=1.5)
    audio = decode_audio(
        io.BytesIO(data), filename="x.mka" if container_format == "matroska" else "x.wav", max_duration_s=60
    )
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


@pytest.mark.parametrize("declared_hz", [1, 4000, 768000])
def test_absurd_sample_rates_are_refused(declared_hz: int) -> None:
    """Issue 18 finding 2: a few KB of WAV declaring 1 Hz decoded to hours of audio (0.9 GB of float32)."""
    data = bytearray(encode_tone("wav", "pcm_s16le", rate=8000, seconds=0.5))
    assert data[24:28] == (8000).to_bytes(4, "little")
    data[24:28] = declared_hz.to_bytes(4, "little")  # the fmt chunk's sample rate
    data[28:32] = (declared_hz * 2).to_bytes(4, "little")  # and its byte rate
    with pytest.raises(AudioFormatError) as info:
        decode_audio(io.BytesIO(bytes(data)), filename="slow.wav", max_duration_s=4 * 3600)
    assert info.value.http_status == 400 and f"{declared_hz} Hz" in info.value.message
