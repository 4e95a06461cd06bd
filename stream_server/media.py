"""Uploaded media files -> 16 kHz mono float32, with PyAV (FFmpeg's libraries, no ffmpeg binary).

Why a module of its own: an HTTP upload is untrusted input in any container and codec. This is the one place
that (1) restricts which FFmpeg demuxers may run at all, (2) tells the client whether the file is *corrupt* or
*of a format we do not take*, and (3) stops decoding as soon as the decoded audio passes the configured
duration cap, so a small file that decodes to days of audio cannot exhaust memory.

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

SAMPLE_RATE = 16000

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
    """Append-only float32 buffer that grows geometrically.

    A list of chunks concatenated at the end would need twice the PCM at the last step; with a size
    estimate from the container the buffer is usually allocated once.
    """

    def __init__(self, expected_samples: int) -> None:
        self._data = np.empty(max(expected_samples, SAMPLE_RATE), dtype=np.float32)
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        needed = self._length + len(samples)
        if needed > len(self._data):
            grown = np.empty(max(needed, int(len(self._data) * 1.5)), dtype=np.float32)
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


def decode_audio(source: BinaryIO, *, filename: str | None = None, max_duration_s: float) -> np.ndarray:
    """Decode the first audio stream of ``source`` to 16 kHz mono float32 in [-1, 1].

    ``source`` is a seekable binary file (an upload spooled to disk: only the decoded PCM is held in memory).
    ``filename`` is only used to word errors. Raises ``UnsupportedFormat`` (not a media file we accept, or no
    audio stream), ``AudioFormatError`` (empty, corrupt, or no decodable audio) and ``LimitExceeded`` as soon
    as more than ``max_duration_s`` of audio has been decoded.

    A file that breaks off mid-way (a truncated recording) keeps the audio decoded before the damage, the way
    the ffmpeg command line does; a file from which nothing decodes is an error.
    """
    source.seek(0, os.SEEK_END)
    if source.tell() == 0:
        raise AudioFormatError("The uploaded file is empty.", param="file")
    source.seek(0)

    max_samples = int(max_duration_s * SAMPLE_RATE)
    with _open_container(source, filename) as container:
        if not container.streams.audio:
            raise UnsupportedFormat("The file contains no audio stream.", param="file")
        stream = container.streams.audio[0]
        pcm = _PcmBuffer(_expected_samples(container, max_samples))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        decode_error: Exception | None = None
        try:
            for frame in container.decode(stream):
                # Timestamps are irrelevant here, and broken ones make the resampler's filter graph fail.
                frame.pts = None
                for out in resampler.resample(frame):
                    _append_checked(pcm, out, max_samples, max_duration_s)
        except (av.error.FFmpegError, ValueError) as exc:
            decode_error = exc
        try:
            for out in resampler.resample(None):
                _append_checked(pcm, out, max_samples, max_duration_s)
        except (av.error.FFmpegError, ValueError) as exc:
            decode_error = decode_error or exc

    if len(pcm) == 0:
        detail = f" ({_reason(decode_error)})" if decode_error else ""
        raise AudioFormatError(f"The file contains no decodable audio{detail}.", param="file")
    audio = pcm.finish()
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def _append_checked(pcm: _PcmBuffer, frame: av.AudioFrame, max_samples: int, max_duration_s: float) -> None:
    samples = frame.to_ndarray().reshape(-1)
    if len(pcm) + len(samples) > max_samples:
        raise LimitExceeded(f"The decoded audio is longer than the limit of {max_duration_s:g} seconds.", param="file")
    pcm.append(samples)
