"""Spoken-language detection per item, on the encoder output a decode has already computed.

Whisper predicts the language as the token after ``<|startoftranscript|>``; CTranslate2's ``detect_language``
runs that one decoder step on encoded features (no second encode) and returns, per item, every language with
its probability (a softmax over the language tokens only). With hints (``languages=es,en``: a call center knows
its languages) the answer is the argmax over the hinted tokens, its probability renormalised over them, which is
the softmax over those tokens' logits alone. Runs on the model thread, inside the backend's decode call.
"""

from __future__ import annotations

from collections.abc import Sequence

import ctranslate2


def detect(
    model: ctranslate2.models.Whisper, encoder_output: ctranslate2.StorageView, hints: Sequence[str] | None
) -> list[tuple[str, float]]:
    """``(language code, probability)`` per item of ``encoder_output``, every item limited to ``hints``
    (``None`` or empty: any language). The model must be multilingual."""
    return detect_each(model, encoder_output, [hints] * encoder_output.shape[0])


def detect_each(
    model: ctranslate2.models.Whisper,
    encoder_output: ctranslate2.StorageView,
    hints: Sequence[Sequence[str] | None],
) -> list[tuple[str, float]]:
    """As ``detect``, with hints of its own for each item (a batch mixes sessions): one model call for all."""
    if len(hints) != encoder_output.shape[0]:
        raise ValueError(f"{len(hints)} hint sets for a batch of {encoder_output.shape[0]}")
    scores = model.detect_language(encoder_output)
    return [choose(item, item_hints) for item, item_hints in zip(scores, hints)]


def choose(scores: Sequence[tuple[str, float]], hints: Sequence[str] | None) -> tuple[str, float]:
    """The most probable language of one item's ``detect_language`` scores (``('<|es|>', p)`` pairs, any
    order), among ``hints`` when given, with its probability renormalised over them."""
    probabilities = {token.strip("<|>"): float(p) for token, p in scores}
    if not hints:
        best = max(probabilities, key=probabilities.__getitem__)
        return best, min(1.0, max(0.0, probabilities[best]))
    allowed = {code: probabilities[code] for code in dict.fromkeys(hints) if code in probabilities}
    if not allowed:
        raise ValueError(f"none of the language hints {list(hints)} is a language of this model")
    best = max(allowed, key=allowed.__getitem__)
    total = sum(allowed.values())
    # every hinted token can underflow to 0 in float16: then they are equally likely
    return best, allowed[best] / total if total > 0 else 1.0 / len(allowed)
