"""Audio codecs for streams: bytes in a client's encoding -> float32 frames ``(n, channels)``.

``make_decoder(encoding, channels, sample_rate)`` returns an ``AudioDecoder``. PCM and G.711 know their rate
from the handshake; containers (WebM/Ogg Opus, ``auto``) learn it from the stream, so ``sample_rate`` may change
from ``None`` to a value after the first bytes. Any chunking is accepted: a decoder keeps partial samples, frames
or pages until the next call.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AudioDecoder(Protocol):
    @property
    def sample_rate(self) -> int | None:
        """Hz of the frames ``decode`` returns; None until a container stream has declared it."""
        ...

    def decode(self, data: bytes) -> np.ndarray:
        """float32 frames ``(n, channels)`` in [-1, 1]; raises ``AudioFormatError`` for bytes that are not
        this encoding."""
        ...

    def flush(self) -> np.ndarray:
        """Frames still held at the end of the stream."""
        ...
