"""The contract every wire dialect implements: a sans-I/O translator between one family of clients and a
``StreamingSession``.

A dialect never touches a socket, a clock or the model. ``transport/connection.py`` owns the websocket and the
session; for each frame it asks the dialect what the client meant (``ClientCommand``s) and for each session
event how to say it (JSON messages). So a dialect is tested by feeding it strings and reading dicts, in
milliseconds, and limits, keys, metrics, backpressure and drain are the connection's, alike for every dialect.

Errors: a dialect raises ``StreamServerError`` subclasses (``InvalidParameter`` at the handshake,
``ProtocolError`` for a bad message, ``AudioFormatError`` ...); the connection reports them through
``Dialect.error`` in the dialect's own shape and applies the error's ``fatal`` / ``close_code``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from ...errors import StreamServerError
from ...session.events import SessionEvent
from ...session.params import StreamParams

Message = dict[str, Any]  # one JSON text frame to the client


# --- the handshake


@dataclass(frozen=True)
class Handshake:
    """What the client sent to open the websocket. ``query`` keeps repeated keys (Deepgram's ``keyterm``)."""

    path: str
    path_params: Mapping[str, str]
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]  # lower-case names
    subprotocols: Sequence[str]
    defaults: StreamParams  # the server's defaults, from Settings
    multilingual: bool  # whether the served model has languages other than English
    model_id: str = ""  # the served model (a client's ``model`` is checked against it, see ``transport/models``)


@dataclass(frozen=True)
class Accepted:
    """A handshake the dialect accepts: the session to open and how to complete the upgrade."""

    params: StreamParams
    api_key: str | None  # the credential presented (checked by the connection), None if none
    subprotocol: str | None = None  # the subprotocol to echo (browsers' ``bearer.KEY`` / ``token``)
    # the dialect may start its session later (OpenAI Realtime waits for nothing; Twilio waits for ``start``):
    # True means the params are complete at the handshake
    ready: bool = True


# --- what a client frame means


@dataclass(frozen=True)
class AudioIn:
    """Audio bytes in the session's encoding. ``channel`` None: interleaved over all channels; an int: the
    mono feed of that one channel (Twilio's inbound/outbound tracks)."""

    data: bytes
    channel: int | None = None


@dataclass(frozen=True)
class FinalizeIn:
    """End the open utterance now (every channel, or one); the stream goes on."""

    channel: int | None = None


@dataclass(frozen=True)
class CloseIn:
    """Flush everything, deliver the remaining finals, then close."""


@dataclass(frozen=True)
class KeepAliveIn:
    """The client is alive (resets the idle timer)."""


@dataclass(frozen=True)
class ClearIn:
    """Discard audio not yet ended into an utterance (OpenAI ``input_audio_buffer.clear``)."""


@dataclass(frozen=True)
class StartIn:
    """Start (or restart with new parameters) the session: a dialect whose parameters arrive in a message
    (Twilio ``start``, OpenAI ``session.update``). A restart flushes the running session first."""

    params: StreamParams
    api_key: str | None = None  # a credential that came in the message (Twilio ``customParameters``)


@dataclass(frozen=True)
class ReplyOut:
    """Messages to send back at once, outside the session's events (``session.updated``, an empty
    ``from_finalize`` result)."""

    messages: tuple[Message, ...]


ClientCommand = AudioIn | FinalizeIn | CloseIn | KeepAliveIn | ClearIn | StartIn | ReplyOut


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    model_id: str
    params: StreamParams


class Dialect(Protocol):
    """One connection's translator. A new instance per connection; it may keep per-connection state (ids,
    the text already sent as deltas).

    Optional class attribute ``coalesce_partials`` (default True): whether, for a client that reads slowly, the
    connection may replace an unsent message rendered from a ``Partial`` by the next one of the same utterance.
    A dialect whose partial messages are deltas (each must arrive) sets it False.
    """

    name: ClassVar[str]  # label in metrics (``errors_total{transport}``) and logs: native, deepgram, ...
    # How a refused handshake is answered: True, an HTTP status before the upgrade (Deepgram clients expect
    # 401/400/429); False, accept, send ``error`` in the dialect's shape, close with the error's close code.
    refuse_with_http: ClassVar[bool]

    def accept(self, handshake: Handshake) -> Accepted:
        """Parse the handshake; raise ``StreamServerError`` to refuse."""
        ...

    def on_text(self, text: str) -> list[ClientCommand]: ...

    def on_binary(self, data: bytes) -> list[ClientCommand]: ...

    def started(self, info: SessionInfo) -> list[Message]:
        """Messages when the session opens (``session.started``, ``session.created``)."""
        ...

    def render(self, event: SessionEvent) -> list[Message]:
        """A session event in this dialect (none, one or several messages)."""
        ...

    def error(self, exc: StreamServerError) -> list[Message]: ...

    def closed(self, reason: str, audio_seconds: float) -> list[Message]:
        """Messages after the last final (``session.closed``, Deepgram ``Metadata``)."""
        ...


@runtime_checkable
class PresentsKey(Protocol):
    """Optional for a dialect: the key a handshake presents, read without parsing the rest, so that a bad key is
    refused (401) before a bad parameter (400) tells an unauthenticated client anything."""

    def presented_key(self, handshake: Handshake) -> str | None: ...
