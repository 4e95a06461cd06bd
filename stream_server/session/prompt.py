"""Rolling prompt: the recent committed text of one stream, fed to Whisper as previous-text context.

Bounded to about ``max_tokens`` tokens (estimated at 4 characters a token, cut at a word boundary; the
backend truncates exactly with the tokenizer). Dropped after a final that looks like a hallucination, so a
loop does not feed itself, and after a long silence, when the topic has likely changed.
"""

from __future__ import annotations

CHARS_PER_TOKEN = 4


class RollingPrompt:
    def __init__(self, initial: str = "", max_tokens: int = 200, reset_silence_s: float = 30.0) -> None:
        self.initial = initial.strip()
        self.max_chars = max_tokens * CHARS_PER_TOKEN
        self.reset_silence_s = reset_silence_s
        self._committed = ""
        self._last_end_s: float | None = None

    def text(self, now_s: float | None = None) -> str:
        """The prompt for an utterance starting at stream time ``now_s``."""
        if now_s is not None and self._last_end_s is not None and now_s - self._last_end_s > self.reset_silence_s:
            self._committed = ""
        return self._committed

    def commit(self, text: str, end_s: float, suspicious: bool) -> None:
        self._last_end_s = end_s
        if suspicious:
            self._committed = ""
            return
        joined = f"{self._committed} {text.strip()}".strip()
        if self.max_chars <= 0:
            joined = ""
        elif len(joined) > self.max_chars:
            cut = joined[-self.max_chars :]
            space = cut.find(" ")
            joined = cut[space + 1 :] if space >= 0 else cut
        self._committed = joined
