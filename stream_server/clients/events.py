"""Protocol v1's server messages as typed, frozen events, and the parser from the wire (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SessionStarted:
    session_id: str
    model: str
    sample_rate: int
    channels: int
    language: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: int
    channel: int
    start: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Partial:
    utterance_id: int
    channel: int
    start: float
    end: float
    text: str
    stable_text: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Final:
    """Committed text of one utterance. ``reason`` (why it ended: endpoint, finalize, close, max_length) is
    None when the server does not send it."""

    utterance_id: int
    channel: int
    start: float
    end: float
    text: str
    language: str
    words: tuple[Word, ...] | None
    reason: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Error:
    code: str
    message: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SessionClosed:
    reason: str
    audio_seconds: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Unknown:
    """A message this client does not know (a newer server); kept, not fatal."""

    type: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


Event = SessionStarted | SpeechStarted | Partial | Final | Error | SessionClosed | Unknown


class ProtocolViolation(ValueError):
    """The server sent something protocol v1 does not allow (binary, not JSON, a required field missing)."""


def parse_event(message: str | bytes) -> Event:
    """One server message -> its typed event; raises ``ProtocolViolation``."""
    if isinstance(message, bytes):
        raise ProtocolViolation("protocol v1 servers send only text messages")
    try:
        raw = json.loads(message)
        kind = raw["type"]
        if kind == "session.started":
            return SessionStarted(
                str(raw["session_id"]),
                str(raw["model"]),
                int(raw["sample_rate"]),
                int(raw["channels"]),
                str(raw["language"]),
                raw,
            )
        if kind == "speech.started":
            return SpeechStarted(int(raw["utterance_id"]), int(raw["channel"]), float(raw["start"]), raw)
        if kind == "partial":
            return Partial(
                int(raw["utterance_id"]),
                int(raw["channel"]),
                float(raw["start"]),
                float(raw["end"]),
                str(raw["text"]),
                str(raw.get("stable_text", "")),
                raw,
            )
        if kind == "final":
            words = raw.get("words")
            return Final(
                int(raw["utterance_id"]),
                int(raw["channel"]),
                float(raw["start"]),
                float(raw["end"]),
                str(raw["text"]),
                str(raw.get("language", "")),
                None
                if words is None
                else tuple(
                    Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w["probability"])) for w in words
                ),
                raw.get("reason"),
                raw,
            )
        if kind == "error":
            return Error(str(raw["code"]), str(raw["message"]), raw)
        if kind == "session.closed":
            return SessionClosed(str(raw["reason"]), float(raw["audio_seconds"]), raw)
        return Unknown(str(kind), raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolViolation(f"malformed server message ({type(exc).__name__}: {exc}): {message[:200]!r}") from None
