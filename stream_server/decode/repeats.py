"""Whisper's short repetition loops, cut to one copy. Pure text functions: no model, no tokenizer.

Greedy Whisper sometimes repeats itself on short or unclear audio ("as was frequently the case" three times
for a 1.8 s fragment), and a short loop passes the compression-ratio test that catches long ones. Resampling at
a higher temperature traded the repeat for misheard words; the first copy is the greedy text itself, so it is
kept and the copies are dropped (see docs/decisions.md#repetition-loops).

Real speech repeats too ("no, no, no", "thank you, thank you"): a block of one word counts as a loop from
``MIN_COPIES_ONE_WORD`` copies, a longer block from ``MIN_COPIES`` copies, and two copies only when the
utterance is one block said twice (``repeated_tail``), or said twice with a word or two changed and faster
than anyone speaks (``near_repeat``).
"""

from __future__ import annotations

from difflib import SequenceMatcher

MIN_COPIES = 3  # a block of two or more words said three times in a row
MIN_COPIES_ONE_WORD = 5  # "no, no, no, no" is speech; "quote quote quote quote quote" is a loop
MAX_BLOCK_WORDS = 16
# Two near copies (``near_repeat``): at least this share of their words in common (difflib's ratio) ...
NEAR_COPY_RATIO = 0.7
# ... in a text that runs faster than this over its audio. Read speech runs 2.5-3.2 words a second (the
# recordings of ../shared/audio); the doubled fragments seen there ran 4.4-6.3 over the same span.
MAX_WORDS_PER_S = 4.0


def too_fast_for_speech(words: int, duration_s: float) -> bool:
    """More than ``MAX_WORDS_PER_S`` words over ``duration_s`` seconds of audio."""
    return words > MAX_WORDS_PER_S * duration_s


def word_key(word: str) -> str:
    """What two spellings of one word share: its letters and digits, lower-cased ("Fair." -> "fair")."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def _one_word_changed(block: list[str], other: list[str]) -> bool:
    return len(other) == len(block) and sum(a != b for a, b in zip(block, other, strict=True)) == 1


def _loop_at(keys: list[str], i: int, near_last_copy: bool = False) -> tuple[int, int] | None:
    """(block size, words the loop covers) of the shortest block starting at ``i`` that repeats into a loop.
    A loop the token cap cut off mid-copy ends the text with the start of one more copy ("And so my fellow
    Americans. And so my fellow Americans. And so my fellow", seen on the JFK clip): that copy counts too. With
    ``near_last_copy``, so does one more copy of a block of several words with one word changed after two exact
    ones ("and so am I fell America and, so am I fell America and so am I fell Americans", the same clip at -50
    dBFS)."""
    for size in range(1, min(MAX_BLOCK_WORDS, (len(keys) - i) // 2) + 1):
        block = keys[i : i + size]
        if not all(block):
            continue
        copies = 1
        while keys[i + copies * size : i + (copies + 1) * size] == block:
            copies += 1
        covered = size * copies
        rest = keys[i + covered :]
        if copies >= 2 and 0 < len(rest) < size and rest == block[: len(rest)]:
            copies, covered = copies + 1, len(keys) - i
        elif near_last_copy and copies >= 2 and size > 1 and _one_word_changed(block, rest[:size]):
            copies, covered = copies + 1, covered + size
        if copies >= (MIN_COPIES_ONE_WORD if size == 1 else MIN_COPIES):
            return size, covered
    return None


def collapse_loops(text: str, near_last_copy: bool = False) -> str:
    """``text`` with every run of repeated blocks (as defined above) cut to its first copy, and runs of
    ``MIN_COPIES`` or more marks with no word in them ("... ... ... ...", seen with beam search) dropped.
    ``near_last_copy``: see ``_loop_at`` (for a text too fast for speech: people say "I want this one, I want
    this one, I want that one")."""
    words = text.split()
    keys = [word_key(w) for w in words]
    kept: list[str] = []
    i = 0
    while i < len(words):
        marks = 0
        while i + marks < len(words) and not keys[i + marks]:
            marks += 1
        if marks >= MIN_COPIES:
            i += marks
            continue
        loop = _loop_at(keys, i, near_last_copy)
        if loop is None:
            kept.append(words[i])
            i += 1
            continue
        size, covered = loop
        kept.extend(words[i : i + size])
        i += covered
    return " ".join(kept) if len(kept) < len(words) else text


def repeated_tail(text: str, min_words: int = 3) -> int:
    """Words at the end of ``text`` that repeat the words just before them (0: none).

    "The children are playing football in the park. The children are playing football in the park" (a 2.8 s
    clip, 4 s window). Counted only when the repeated block is at least ``min_words`` long and the two copies
    make up most of the text."""
    words = [word_key(w) for w in text.split()]
    for size in range(len(words) // 2, min_words - 1, -1):
        if words[-size:] == words[-2 * size : -size] and 2 * size >= 0.8 * len(words):
            return size
    return 0


def near_repeat(text: str, duration_s: float, min_words: int = 3) -> int:
    """Words of the first copy, when ``text`` is one phrase said twice with a few words changed (0: it is not).

    Seen on ../shared/audio: "sentenced to fines or a short imprisonment sentence to fines or short
    imprisonment" for a 2.4 s fragment, "In the same rooms with transbers and felons. In the same rooms with
    transporters" (2.5 s). A person can say a phrase twice, so it counts only when the words run faster than
    ``MAX_WORDS_PER_S`` over ``duration_s`` of audio: two copies in the time of one. The second copy starts
    again where the first did: its first word is (nearly) the first copy's first word. Of such splits the
    most similar wins, then the one with copies of the most equal length."""
    words = [word_key(w) for w in text.split()]
    if len(words) < 2 * min_words or not too_fast_for_speech(len(words), duration_s):
        return 0
    best: tuple[float, int, int] = (0.0, 0, 0)
    for cut in range(min_words, len(words) - min_words + 1):
        if SequenceMatcher(None, words[0], words[cut]).ratio() < NEAR_COPY_RATIO:  # "sentenced" ~ "sentence"
            continue
        ratio = SequenceMatcher(None, words[:cut], words[cut:], autojunk=False).ratio()
        best = max(best, (ratio, -abs(len(words) - 2 * cut), cut))
    ratio, _, split = best
    return split if ratio >= NEAR_COPY_RATIO else 0


def drop_repeats(text: str, duration_s: float) -> str:
    """For the text of ``duration_s`` seconds of audio: one copy of every loop, then one copy of an
    utterance said twice, word for word or with words changed."""
    text = collapse_loops(text, near_last_copy=too_fast_for_speech(len(text.split()), duration_s))
    size = repeated_tail(text)
    if size:
        return " ".join(text.split()[:-size])
    first = near_repeat(text, duration_s)
    return " ".join(text.split()[:first]) if first else text
