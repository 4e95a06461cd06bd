"""Uploaded media files -> 16 kHz mono int16, with PyAV (FFmpeg's libraries, no ffmpeg binary).

Why a module of its own: an HTTP upload is untrusted input in any container and codec. This is the one place
that (1) restricts which FFmpeg demuxers may run at all, (2) tells the client whether the file is *corrupt* or
*of a format we do not take*, and (3) stops decoding as soon as the decoded audio passes the configured
duration cap, so a small file that decodes to days of audio cannot exhaust memory. Declared sample rates
outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE`` are refused (a 1 Hz WAV of a few KB is hours of audio), every
decoded sample is counted against the process-wide ``UploadGuard`` (``uploads_guard``), and the PCM is held
as int16 (half of float32). Any channel count is accepted: channels are mixed down to mono (FFmpeg's
downmix up to 8 channels; an equal-weight mean beyond, where FFmpeg knows no layout).

Blocking and CPU-bound (an hour of MP3 takes a few seconds): call it from a worker thread, never on the
event loop. The caller owns the returned array.
"""

from __future__ import annotations

import math
import os
from typing import BinaryIO

import av
import numpy as np

from .errors import AudioFormatError, LimitExceeded, UnsupportedFormat
from .uploads_guard import Reservation, UploadGuard, process_upload_guard

SAMPLE_RATE = 16000
# Declared sample rates accepted in uploads (Hz): telephone audio up to DXD studio masters.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 384000
# FFmpeg's resampler knows channel layouts up to 8 channels; beyond, frames are mixed down here first.
MAX_FFMPEG_DOWNMIX_CHANNELS = 8

# File name extensions OpenAI documents for /v1/audio/*, plus common aliases of the same containers.
SUPPORTED_EXTENSIONS = frozenset(
    {"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "opus", "wav", "webm", "mka", "mkv", "aac"}
)

# FFmpeg demuxers allowed to open an upload (FFmpeg's ``format_whitelist``). Everything else is refused
# before its demuxer runs: playlist/concat demuxers (hls, concat) can open other files or URLs, and image
# or text demuxers are never what a client meant to send.
ALLOWED_DEMUXERS = "wav,w64,mp3,mov,mp4,m4a,3gp,matroska,webm,ogg,flac,mpeg,mpegts,aac,aiff,caf,amr"

_SUPPORTED_LIST = "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm"


class _PcmBuffer:
    """Append-only int16 buffer that grows geometrically.

    A list of chunks concatenated at the end would need twice the PCM at the last step; with a size
    estimate from the container the buffer is usually allocated once.
    """

    def __init__(self, expected_samples: int) -> None:
        self._data = np.empty(max(expected_samples, SAMPLE_RATE), dtype=np.int16)
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        needed = self._length + len(samples)
        if needed > len(self._data):
            grown = np.empty(max(needed, int(len(self._data) * 1.5)), dtype=np.int16)
            grown[: self._length] = self._data[: self._length]
            self._data = grown
        self._data[self._length : needed] = samples
        self._length = needed

    def finish(self) -> np.ndarray:
        """The samples, trimmed in place (a realloc, not a second copy of an hour of PCM)."""
        self._data.resize(self._length, refcheck=False)
        return self._data


def _extension(filename: str | None) -> str:
    if not filename:
        return ""
    return os.path.splitext(filename)[1].lstrip(".").lower()


def _open_container(source: BinaryIO, filename: str | None) -> av.container.InputContainer:
    """Open with the demuxer whitelist and sort failures into 'not our format' vs 'broken file'."""
    try:
        return av.open(source, mode="r", options={"format_whitelist": ALLOWED_DEMUXERS})
    except av.error.ArgumentError as exc:
        # FFmpeg answers EINVAL when the probed demuxer is not on the whitelist (an image, a playlist...).
        raise UnsupportedFormat(
            f"Unsupported file format. Supported formats: {_SUPPORTED_LIST}.", param="file"
        ) from exc
    except (av.error.FFmpegError, OSError) as exc:
        if _extension(filename) in SUPPORTED_EXTENSIONS:
            raise AudioFormatError(
                f"The audio file could not be decoded: it is corrupt, truncated, or not the format its name "
                f"'{filename}' says ({_reason(exc)}).",
                param="file",
            ) from exc
        raise UnsupportedFormat(
            f"Unrecognized file format{f' of {filename!r}' if filename else ''}. Supported formats: {_SUPPORTED_LIST}.",
            param="file",
        ) from exc


def _reason(exc: Exception) -> str:
    """FFmpeg's own words without PyAV's errno and '<none>' file name decorations."""
    return str(getattr(exc, "strerror", None) or exc)


def _expected_samples(container: av.container.InputContainer, max_samples: int) -> int:
    """The container's own duration estimate, for preallocation only (it may be absent or wrong)."""
    if container.duration is None or container.duration <= 0:
        return SAMPLE_RATE * 60
    estimate = math.ceil(container.duration / av.time_base * SAMPLE_RATE * 1.02)
    return min(estimate, max_samples + SAMPLE_RATE)


def decode_audio(
    source: BinaryIO, *, filename: str | None = None, max_duration_s: float, guard: UploadGuard | None = None
) -> np.ndarray:
    """Decode the first audio stream of ``source`` to 16 kHz mono int16 (``pcm16_to_float32`` for the model).

    ``source`` is a seekable binary file (an upload spooled to disk: only the decoded PCM is held in memory).
    ``filename`` is only used to word errors. Raises ``UnsupportedFormat`` (not a media file we accept, or no
    audio stream), ``AudioFormatError`` (empty, corrupt, no decodable audio, or a sample rate out of range),
    ``LimitExceeded`` as soon as more than ``max_duration_s`` of audio has been decoded, and from ``guard``
    (default: the process's) ``Overloaded`` and ``ShuttingDown``. The returned array's samples stay counted
    by the guard until it is garbage-collected.

    A file that breaks off mid-way (a truncated recording) keeps the audio decoded before the damage, the way
    the ffmpeg command line does; a file from which nothing decodes is an error.
    """
    source.seek(0, os.SEEK_END)
    if source.tell() == 0:
        raise AudioFormatError("The uploaded file is empty.", param="file")
    source.seek(0)

    with (guard or process_upload_guard()).admit() as reservation:
        pcm = _decode(source, filename, max_duration_s, reservation)
        audio = pcm.finish()
        reservation.hold(audio)
    return audio


def pcm16_to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 PCM (as ``decode_audio`` returns it) -> float32 in [-1, 1); float32 passes through."""
    converted: np.ndarray = samples.astype(np.float32, copy=samples.dtype == np.int16)
    if samples.dtype == np.int16:
        converted *= np.float32(1 / 32768)
    return converted


def _decode(source: BinaryIO, filename: str | None, max_duration_s: float, reservation: Reservation) -> _PcmBuffer:
    max_samples = int(max_duration_s * SAMPLE_RATE)
    with _open_container(source, filename) as container:
        if not container.streams.audio:
            raise UnsupportedFormat("The file contains no audio stream.", param="file")
        stream = container.streams.audio[0]
        _check_sample_rate(stream.rate)
        pcm = _PcmBuffer(_expected_samples(container, max_samples))
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        decode_error: Exception | None = None
        try:
            for frame in container.decode(stream):
                _check_sample_rate(frame.sample_rate)
                # Timestamps are irrelevant here, and broken ones make the resampler's filter graph fail.
                frame.pts = None
                for out in resampler.resample(_mixable(frame)):
                    _append_checked(pcm, out, max_samples, max_duration_s, reservation)
        except (av.error.FFmpegError, ValueError) as exc:
            decode_error = exc
        try:
            for out in resampler.resample(None):
                _append_checked(pcm, out, max_samples, max_duration_s, reservation)
        except (av.error.FFmpegError, ValueError) as exc:
            decode_error = decode_error or exc

    if len(pcm) == 0:
        detail = f" ({_reason(decode_error)})" if decode_error else ""
        raise AudioFormatError(f"The file contains no decodable audio{detail}.", param="file")
    return pcm


def _check_sample_rate(rate: int | None) -> None:
    if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"The audio's sample rate of {rate} Hz is outside the accepted {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz.",
            param="file",
        )


_INTEGER_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _mixable(frame: av.AudioFrame) -> av.AudioFrame:
    """``frame`` itself, or (more than 8 channels) its equal-weight mono mix as a float frame."""
    channels = len(frame.layout.channels)
    if channels <= MAX_FFMPEG_DOWNMIX_CHANNELS:
        return frame
    data = frame.to_ndarray()
    name = frame.format.name
    if frame.format.is_planar:
        name = name[:-1]  # "s16p" -> "s16"
    else:
        data = data.reshape(-1, channels).T  # interleaved -> one row per channel
    mix = data.astype(np.float64).mean(axis=0)
    if name == "u8":
        mix -= 128.0
    mix = (mix / _INTEGER_SCALE.get(name, 1.0)).astype(np.float32)
    mono = av.AudioFrame.from_ndarray(mix[None, :], format="flt", layout="mono")
    mono.sample_rate = frame.sample_rate
    return mono


def _append_checked(
    pcm: _PcmBuffer, frame: av.AudioFrame, max_samples: int, max_duration_s: float, reservation: Reservation
) -> None:
    samples = frame.to_ndarray().reshape(-1)
    if len(pcm) + len(samples) > max_samples:
        raise LimitExceeded(f"The decoded audio is longer than the limit of {max_duration_s:g} seconds.", param="file")
    reservation.take(len(samples))
    pcm.append(samples)
