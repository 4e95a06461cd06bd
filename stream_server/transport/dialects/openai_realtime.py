"""OpenAI Realtime transcription at ``/v1/realtime?intent=transcription``: the openai SDK (GA and beta), LiveKit's
and Pipecat's realtime STT. Field names and what each client reads: research/clients.md §2.

Configuration arrives as ``session.update`` (GA, ``session.type: transcription``) or
``transcription_session.update`` (beta) at any time; a change restarts the session (``StartIn`` flushes the open
utterance first). Audio: ``audio/pcm`` (24 kHz by default), ``audio/pcmu``, ``audio/pcma`` (beta ``pcm16``,
``g711_ulaw``, ``g711_alaw``). ``turn_detection`` ``server_vad`` (``semantic_vad`` is treated alike):
``silence_duration_ms`` is the endpointing; ``null``: only ``input_audio_buffer.commit`` ends an item.

Items: one item per utterance; a length cut does not end an item (its text is joined with what follows), so
commit-only mode yields one ``completed`` per commit. Deltas are the growth of the session's never-retracted
``stable_text`` less its last word (the one a final most often re-segments); the ``completed`` transcript always
extends the deltas already sent, so concatenated deltas equal it (when the final rewrote words already sent, the
sent words stand and the final supplies the rest).
``error`` is sent only for a client's real mistake: an idle close is quiet (LiveKit and Pipecat treat ``error``
as fatal), and an empty commit is answered ``committed`` + an empty ``completed``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import IdleTimeout, InvalidParameter, ProtocolError, StreamServerError
from ...session.events import DecodeError, Final, Partial, SessionEvent, SpeechEnded, SpeechStarted
from ._query import json_object, last
from .base import (
    Accepted,
    AudioIn,
    ClearIn,
    ClientCommand,
    FinalizeIn,
    Handshake,
    Message,
    ReplyOut,
    SessionInfo,
    StartIn,
)
from .openai_config import RealtimeConfig, apply_update, describe, initial_config

_KEY_SUBPROTOCOL = "openai-insecure-api-key."


@dataclass
class _Item:
    """One conversation item being transcribed: what was already sent as deltas and the finals it holds."""

    item_id: str
    start: float | None = None
    end: float = 0.0
    committed: bool = False
    continues: bool = False  # its last utterance was cut for length: the next utterance joins it
    failed: bool = False
    sent: str = ""  # the concatenation of the deltas sent
    done: list[str] = field(default_factory=list)  # finals of length cuts inside this item

    def text_with(self, tail: str) -> str:
        return " ".join([*self.done, tail.strip()]).strip() if tail.strip() else " ".join(self.done)


class OpenAIRealtimeDialect:
    """One Realtime connection: its transcription config, the item in progress and the event counters."""

    name: ClassVar[str] = "openai_realtime"
    refuse_with_http: ClassVar[bool] = True  # a bad key or intent fails ``connect()`` at once, with 401/400
    coalesce_partials: ClassVar[bool] = False  # each partial's deltas are pieces of the transcript: none dropped

    def __init__(self) -> None:
        self._beta = False
        self._config: RealtimeConfig | None = None
        self._session_id = "sess_0"
        self._created_sent = False
        self._counter = 0
        self._item: _Item | None = None  # the item new speech joins (None after its speech ended)
        self._by_utterance: dict[int, _Item] = {}  # utterances whose final has not come yet
        self._previous_item_id: str | None = None
        self._client_event_id: str | None = None

    # --- handshake

    def presented_key(self, handshake: Handshake) -> str | None:
        """``Authorization: Bearer KEY``, else the browser subprotocol ``openai-insecure-api-key.KEY``."""
        scheme, _, token = handshake.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        for proto in handshake.subprotocols:
            if proto.startswith(_KEY_SUBPROTOCOL):
                return proto[len(_KEY_SUBPROTOCOL) :]
        return None

    def accept(self, handshake: Handshake) -> Accepted:
        intent = last(handshake.query, "intent")
        if intent != "transcription":
            raise InvalidParameter("only transcription sessions are served: add ?intent=transcription", param="intent")
        protocols = list(handshake.subprotocols)
        self._beta = "realtime=v1" in handshake.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in protocols
        api_key = self.presented_key(handshake)
        subprotocol = None
        if "realtime" in protocols:
            subprotocol = "realtime"  # browsers offer it beside the key; it must be echoed
        self._config = initial_config(handshake.defaults, last(handshake.query, "model"))
        return Accepted(params=self._config.params, api_key=api_key, subprotocol=subprotocol)

    # --- client events

    def on_binary(self, data: bytes) -> list[ClientCommand]:
        raise ProtocolError("binary frames are not part of the Realtime API: send input_audio_buffer.append")

    def on_text(self, text: str) -> list[ClientCommand]:
        self._client_event_id = None
        event = json_object(text, "type")
        event_id = event.get("event_id")
        self._client_event_id = event_id if isinstance(event_id, str) else None
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            return [AudioIn(_audio(event.get("audio")))]
        if kind == "input_audio_buffer.commit":
            return self._commit()
        if kind == "input_audio_buffer.clear":
            self._forget_open_item()
            return [ClearIn(), ReplyOut((self._event("input_audio_buffer.cleared"),))]
        if kind in ("session.update", "transcription_session.update"):
            session = event.get("session")
            if not isinstance(session, dict):
                raise ProtocolError(f"{kind} needs a 'session' object", param="session")
            return self._update(session, beta=kind == "transcription_session.update")
        raise ProtocolError(f"event type {kind!r} is not supported by a transcription session", param="type")

    def _commit(self) -> list[ClientCommand]:
        if self._item is not None or self._by_utterance:
            return [FinalizeIn(None)]  # the open item's final answers (committed, deltas, completed)
        item = self._new_item()
        item.committed = True
        messages = (self._committed(item), self._completed(item, ""))
        self._item = None
        return [FinalizeIn(None), ReplyOut(messages)]

    def _forget_open_item(self) -> None:
        """``clear``: the open utterance is abandoned without a final, so its item is dropped unsaid."""
        if self._item is not None:
            self._by_utterance = {u: i for u, i in self._by_utterance.items() if i is not self._item}
            self._item = None

    def _update(self, session: dict[str, Any], *, beta: bool) -> list[ClientCommand]:
        assert self._config is not None, "accept() comes first"
        self._beta = beta
        config = apply_update(self._config, session, beta=beta)
        commands: list[ClientCommand] = []
        if config.params != self._config.params:
            commands.append(StartIn(config.params))  # the restart flushes the open item first
        self._config = config
        name = "transcription_session.updated" if beta else "session.updated"
        commands.append(ReplyOut((self._event(name, session=describe(config, self._session_id, beta=beta)),)))
        return commands

    # --- server events

    def started(self, info: SessionInfo) -> list[Message]:
        if self._created_sent:
            self._item = None  # a restart after session.update: the old session is flushed and said
            self._by_utterance.clear()
            return []  # the client already had session.created
        self._created_sent = True
        self._session_id = f"sess_{info.session_id}"
        name = "transcription_session.created" if self._beta else "session.created"
        assert self._config is not None
        return [self._event(name, session=describe(self._config, self._session_id, beta=self._beta))]

    def render(self, event: SessionEvent) -> list[Message]:
        vad = self._config is not None and self._config.silence_ms is not None
        if isinstance(event, SpeechStarted):
            continuing = self._item is not None and self._item.continues
            item = self._started(event.utterance_id)
            if item.start is None:
                item.start = event.start
            if not vad or continuing:
                return []
            return [
                self._event("input_audio_buffer.speech_started", audio_start_ms=_ms(event.start), item_id=item.item_id)
            ]
        if isinstance(event, SpeechEnded):
            item = self._item_of(event.utterance_id)
            if event.reason == "max_length":
                item.continues = True  # the item goes on with the next utterance
                return []
            self._item = None  # the next utterance opens a new item
            item.end = event.end
            messages = []
            if vad and event.reason == "endpoint":
                messages.append(
                    self._event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(event.end), item_id=item.item_id)
                )
            if not item.committed:
                messages.append(self._committed(item))
            return messages
        if isinstance(event, Partial):
            item = self._item_of(event.utterance_id)
            return self._delta(item, _settled(item.text_with(event.stable_text)))
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, DecodeError):
            item = self._item_of(event.utterance_id)
            item.failed = True
            failure = {"type": "server_error", "code": "decode_failed", "message": event.message, "param": None}
            messages = [] if item.committed else [self._committed(item)]
            return [
                *messages,
                self._event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item.item_id,
                    content_index=0,
                    error=failure,
                ),
            ]
        return []

    def _started(self, utterance_id: int) -> _Item:
        """A new utterance joins the open item only after a length cut; otherwise it opens a new item."""
        item = self._by_utterance.get(utterance_id)
        if item is None:
            if self._item is not None and self._item.continues:
                item = self._item
                item.continues = False
            else:
                item = self._new_item()
            self._by_utterance[utterance_id] = item
        return item

    def _item_of(self, utterance_id: int) -> _Item:
        """The item an utterance belongs to: the one it was started in, else the open one, else a new one."""
        item = self._by_utterance.get(utterance_id) or self._item or self._new_item()
        self._by_utterance[utterance_id] = item
        return item

    def _final(self, event: Final) -> list[Message]:
        item = self._item_of(event.utterance_id)
        del self._by_utterance[event.utterance_id]
        if item.start is None:
            item.start = event.start
        item.end = max(item.end, event.end)
        if event.reason == "max_length" and item is self._item:
            if all(other is not item for other in self._by_utterance.values()):
                item.continues = True  # no later utterance joined yet: the next one will
            if event.text.strip():
                item.done.append(event.text.strip())
            return self._delta(item, item.text_with(""))
        if item is self._item:
            self._item = None
        if item.failed:
            return []  # ``failed`` already told the client
        messages = [] if item.committed else [self._committed(item)]
        transcript = _extend(item.sent, item.text_with(event.text))
        messages += self._delta(item, transcript)
        messages.append(self._completed(item, transcript))
        return messages

    def _delta(self, item: _Item, text: str) -> list[Message]:
        if not text.startswith(item.sent) or len(text) == len(item.sent):
            return []  # stable text never retracts; anything else waits for the final
        growth = text[len(item.sent) :]
        item.sent = text
        return [
            self._event(
                "conversation.item.input_audio_transcription.delta", item_id=item.item_id, content_index=0, delta=growth
            )
        ]

    def _committed(self, item: _Item) -> Message:
        item.committed = True
        message = self._event(
            "input_audio_buffer.committed", item_id=item.item_id, previous_item_id=self._previous_item_id
        )
        self._previous_item_id = item.item_id
        return message

    def _completed(self, item: _Item, transcript: str) -> Message:
        seconds = max(0.0, item.end - (item.start if item.start is not None else item.end))
        return self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(seconds, 3)},
        )

    def _new_item(self) -> _Item:
        self._counter += 1
        self._item = _Item(f"item_{self._session_id[5:13]}{self._counter:06d}")
        return self._item

    def _event(self, name: str, **fields: Any) -> Message:
        self._counter += 1
        return {"type": name, "event_id": f"event_{self._counter:08d}", **fields}

    def error(self, exc: StreamServerError) -> list[Message]:
        if isinstance(exc, IdleTimeout):
            return []  # pooled sockets idle out: quiet, since both frameworks treat ``error`` as fatal
        detail = {"type": exc.error_type, "code": exc.code, "message": exc.message, "param": exc.param,
                  "event_id": self._client_event_id}  # fmt: skip
        return [self._event("error", error=detail)]

    def closed(self, reason: str, audio_seconds: float) -> list[Message]:
        return []  # the Realtime API has no closing event


def _audio(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("input_audio_buffer.append needs 'audio', a base64 string", param="audio")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64", param="audio") from None


_WORD = re.compile(r"[\w']+")


def _extend(sent: str, final: str) -> str:
    """The completed transcript: ``final`` if it extends the deltas ``sent``; else ``sent`` plus the final's words
    after those sent, aligned on words ignoring case and punctuation (sent stable text is never retracted)."""
    if final.startswith(sent):
        return final
    sent_words = _WORD.findall(sent.lower())
    final_tokens = final.split()
    taken = 0
    matched = 0
    while taken < len(final_tokens) and matched < len(sent_words):
        matched += len(_WORD.findall(final_tokens[taken].lower()))
        taken += 1
    rest = " ".join(final_tokens[taken:])
    if not rest:
        return sent
    return f"{sent.rstrip()} {rest}" if sent.strip() else rest


def _settled(stable: str) -> str:
    """Stable text less its last word: the word two partials agree on last is the one a final most often
    splits or joins (``informed`` -> ``in form``), and a delta once sent is never taken back."""
    head, _, _ = stable.rstrip().rpartition(" ")
    return head


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
