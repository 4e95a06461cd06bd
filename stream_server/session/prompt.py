"""Rolling prompt: the recent committed text of one stream, fed to Whisper as previous-text context.

Bounded to about ``max_tokens`` tokens (estimated at 4 characters a token, cut at a word boundary; the
backend truncates exactly with the tokenizer). Dropped after a final that looks like a hallucination, so a
loop does not feed itself, and after a long silence, when the topic has likely changed.

It remembers where each final's audio started, so the session can move the newest finals out of the prompt
and into an acoustic context (``split``): their audio in front of the next final's, their text forced as the
start of its transcript.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class _Entry:
    start_s: float  # where the final's audio started (stream seconds)
    text: str  # as committed: a sentence (``_as_sentence``)


class RollingPrompt:
    def __init__(self, initial: str = "", max_tokens: int = 200, reset_silence_s: float = 30.0) -> None:
        self.initial = initial.strip()
        self.max_chars = max_tokens * CHARS_PER_TOKEN
        self.reset_silence_s = reset_silence_s
        self._entries: deque[_Entry] = deque()
        self._last_end_s: float | None = None

    def text(self, now_s: float | None = None) -> str:
        """The prompt for an utterance starting at stream time ``now_s``."""
        return self.split(float("inf"), now_s)[0]

    def starts(self, now_s: float | None = None) -> list[float]:
        """Where the audio of each remembered final started, oldest first."""
        self._expire(now_s)
        return [e.start_s for e in self._entries]

    def split(self, since_s: float, now_s: float | None = None) -> tuple[str, str]:
        """(the prompt: finals whose audio started before ``since_s``, bounded; the text of the later ones)."""
        self._expire(now_s)
        before = " ".join(e.text for e in self._entries if e.start_s < since_s)
        after = " ".join(e.text for e in self._entries if e.start_s >= since_s)
        return self._bounded(before), after

    def _expire(self, now_s: float | None) -> None:
        if now_s is not None and self._last_end_s is not None and now_s - self._last_end_s > self.reset_silence_s:
            self._entries.clear()

    def _bounded(self, text: str) -> str:
        if self.max_chars <= 0:
            return ""
        if len(text) <= self.max_chars:
            return text
        cut = text[-self.max_chars :]
        space = cut.find(" ")
        return cut[space + 1 :] if space >= 0 else cut

    def _as_sentence(self, text: str) -> str:
        """A final as Whisper's previous-text context: capitalised after a sentence end, and ended with a full
        stop where it stops on a word, because Whisper follows its prompt's style and a short fragment often
        decodes bare ("Section 5"). See docs/decisions.md#prompt-as-sentences."""
        if not text:
            return text
        if not self._entries or self._entries[-1].text[-1] in ".!?":  # entries are never empty (``commit``)
            text = text[0].upper() + text[1:]
        return text + "." if text[-1].isalnum() else text

    def clear(self) -> None:
        """Forget every final (the user's ``initial`` text stays): e.g. when the language changed."""
        self._entries.clear()

    def commit(self, text: str, end_s: float, suspicious: bool, start_s: float | None = None) -> None:
        """Remember a final's text; ``start_s`` is where its audio started (default: ``end_s``)."""
        self._last_end_s = end_s
        if suspicious:
            self._entries.clear()
            return
        if not text.strip():
            return
        self._entries.append(_Entry(end_s if start_s is None else start_s, self._as_sentence(text.strip())))
        # keep only what a prompt can still show: the oldest final goes once the rest fill the bound
        chars = sum(len(e.text) + 1 for e in self._entries)
        while len(self._entries) > 1 and chars - len(self._entries[0].text) - 1 >= self.max_chars:
            chars -= len(self._entries.popleft().text) + 1
