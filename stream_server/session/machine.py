"""The streaming session: a sans-I/O state machine (in the manner of python-websockets and h11).

The transport feeds it bytes and decode outcomes and performs the events it returns; the session never
awaits, never touches a socket, never calls the model and never reads a clock. It decodes the client's audio
(``codecs``) and hands each channel's samples to its ``Channel`` (``channel.py``), which segments them into
utterances and asks for partial and final decodes. Each ``DecodeRequested`` comes back with its outcome
(``receive_decode_result``, ``receive_decode_failure``, ``abandon``): the request itself says what it was for.
Session states: ``OPEN -> CLOSING (close) -> CLOSED``; audio after ``close`` is a protocol error.
"""

from __future__ import annotations

import enum

import numpy as np

from ..codecs import AudioDecoder, make_decoder
from ..decode.types import SAMPLE_RATE, DecodeResult
from ..errors import ProtocolError
from .channel import Channel
from .events import DecodePurpose, DecodeRequested, SessionEvent
from .params import StreamParams
from .policy import SessionPolicy
from .segmenter import SpeechClassifier


class SessionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class StreamingSession:
    """One client stream of ``params.channels`` independent channels (one when ``params.mixdown``). Not
    thread-safe: one owner at a time. ``params`` must have passed ``validate_params``."""

    def __init__(
        self,
        session_id: str,
        params: StreamParams,
        policy: SessionPolicy,
        classifier: SpeechClassifier | None = None,
    ) -> None:
        self.session_id = session_id
        self.state = SessionState.OPEN
        self._params = params
        self._policy = policy
        self._decoder = make_decoder(params.encoding, params.channels, params.sample_rate)
        self._track_decoders: dict[int, AudioDecoder] = {}  # receive_channel_audio: one mono decoder a channel
        count = 1 if params.mixdown else params.channels
        self._channels = [Channel(i, session_id, params, policy, classifier) for i in range(count)]
        self.bytes_received = 0

    @property
    def params(self) -> StreamParams:
        return self._params

    @property
    def policy(self) -> SessionPolicy:
        return self._policy

    @property
    def audio_seconds(self) -> float:
        """Stream seconds received (the longest channel's)."""
        return max(c.samples_seen for c in self._channels) / SAMPLE_RATE

    @property
    def pending_finals(self) -> int:
        return sum(c.pending_finals for c in self._channels)

    @property
    def backlog_seconds(self) -> float:
        """Audio of ended utterances still waiting for their finals: what backpressure bounds."""
        return sum(c.finals.backlog_s for c in self._channels)

    @property
    def done(self) -> bool:
        """Closing and every final delivered: the transport may send its closing message."""
        return self.state is not SessionState.OPEN and self.pending_finals == 0

    # --- audio in

    def receive_audio(self, data: bytes) -> list[SessionEvent]:
        """Bytes of the interleaved stream, in any chunking."""
        self._check_open()
        self.bytes_received += len(data)
        return self._feed(self._decoder.decode(data), self._decoder.sample_rate)

    def receive_channel_audio(self, channel: int, data: bytes) -> list[SessionEvent]:
        """Bytes of one channel's mono feed in the session's encoding (a call's separate tracks)."""
        self._check_open()
        if self._params.mixdown:
            raise ProtocolError("per-channel audio cannot be mixed down")
        if not 0 <= channel < len(self._channels):
            raise ProtocolError(f"channel {channel} is not one of the stream's {len(self._channels)} channels")
        self.bytes_received += len(data)
        decoder = self._track_decoders.get(channel)
        if decoder is None:
            decoder = self._track_decoders[channel] = make_decoder(self._params.encoding, 1, self._params.sample_rate)
        frames = decoder.decode(data)
        if decoder.sample_rate is None:
            return []
        return self._channels[channel].feed(frames[:, 0], decoder.sample_rate)

    def _feed(self, frames: np.ndarray, rate: int | None) -> list[SessionEvent]:
        if rate is None:  # a container that has not declared its rate yet holds its frames back
            return []
        if self._params.mixdown:
            return self._channels[0].feed(frames.mean(axis=1, dtype=np.float32), rate)
        return [e for c in self._channels for e in c.feed(frames[:, c.index], rate)]

    def _check_open(self) -> None:
        if self.state is not SessionState.OPEN:
            raise ProtocolError("audio after close_stream")

    # --- client commands

    def finalize(self, channel: int | None = None) -> list[SessionEvent]:
        """End the open utterance of ``channel`` (None: every channel) now; the stream goes on."""
        channels = self._channels if channel is None else [self._channel(channel)]
        return [e for c in channels for e in c.flush("finalize")]

    def clear(self) -> None:
        """Discard every channel's open utterance and the audio not yet ended; finals already asked for stay."""
        for channel in self._channels:
            channel.clear()

    def close(self) -> list[SessionEvent]:
        """Flush everything (end of stream); ``done`` turns true once every final is delivered."""
        if self.state is not SessionState.OPEN:
            return []
        events: list[SessionEvent] = []
        held = self._decoder.flush()  # what a container decoder still holds
        if len(held):
            events.extend(self._feed(held, self._decoder.sample_rate))
        for index, decoder in self._track_decoders.items():
            held = decoder.flush()
            if len(held) and decoder.sample_rate is not None:
                events.extend(self._channels[index].feed(held[:, 0], decoder.sample_rate))
        events.extend(e for c in self._channels for e in c.flush("close"))
        self.state = SessionState.CLOSING
        return events

    def mark_closed(self) -> None:
        """The connection is gone: release what the decoders hold (a container stream's thread)."""
        self.state = SessionState.CLOSED
        for decoder in (self._decoder, *self._track_decoders.values()):
            decoder.close()

    # --- decode outcomes

    def receive_decode_result(self, request: DecodeRequested, result: DecodeResult) -> list[SessionEvent]:
        return self._outcome(request, result, None)

    def receive_decode_failure(self, request: DecodeRequested, message: str) -> list[SessionEvent]:
        """A failed partial is harmless (the next one or the final replaces it); a failed final is delivered
        empty after a ``DecodeError``, so finals stay in order."""
        return self._outcome(request, None, message)

    def abandon(self, request: DecodeRequested) -> list[SessionEvent]:
        """The engine dropped the request's job unrun (a newer partial or speech superseded it)."""
        if request.purpose is DecodePurpose.PARTIAL:
            return []
        return self.receive_decode_failure(request, "decode cancelled")

    def _outcome(self, request: DecodeRequested, result: DecodeResult | None, error: str | None) -> list[SessionEvent]:
        channel = self._channel(request.channel)
        if request.purpose is DecodePurpose.FINAL:
            return channel.on_final(request, result, error)
        if request.purpose is DecodePurpose.SPECULATIVE:
            return channel.on_speculative(request, result, error)
        return [] if result is None else channel.on_partial(request, result)

    def _channel(self, index: int) -> Channel:
        if not 0 <= index < len(self._channels):
            raise ProtocolError(f"channel {index} is not one of the stream's {len(self._channels)} channels")
        return self._channels[index]
