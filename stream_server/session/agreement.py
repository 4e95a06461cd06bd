"""Stable prefix of successive partials (LocalAgreement-2, as in whisper_streaming's HypothesisBuffer).

A word is stable once two successive hypotheses agree on it and on every word before it. Stable text only
grows: a later disagreement never retracts it (the final may still differ; the final is authoritative). The
text shown for a partial is the stable prefix followed by the newest hypothesis beyond it, so what a client
displays always starts with what it was told is stable.
"""

from __future__ import annotations


class StablePrefix:
    def __init__(self) -> None:
        self._previous: list[str] = []
        self._stable: list[str] = []

    @property
    def text(self) -> str:
        return " ".join(self._stable)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Take the newest hypothesis; returns ``(stable_text, text_to_show)``."""
        words = hypothesis.split()
        agreed = 0
        for a, b in zip(self._previous, words):
            if _norm(a) != _norm(b):
                break
            agreed += 1
        if agreed > len(self._stable) and all(
            _norm(s) == _norm(w) for s, w in zip(self._stable, words[: len(self._stable)])
        ):
            self._stable = self._stable + words[len(self._stable) : agreed]
        self._previous = words
        shown = self._stable + words[len(self._stable) :]
        return self.text, " ".join(shown)


def _norm(word: str) -> str:
    return word.strip(".,!?;:\"'").lower()
