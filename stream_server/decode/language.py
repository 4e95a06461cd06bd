"""Spoken-language detection per item, on the encoder output a decode has already computed.

Whisper predicts the language as the token after ``<|startoftranscript|>``; CTranslate2's ``detect_language``
runs that one decoder step on encoded features (no second encode) and returns, per item, every language with
its probability (a softmax over the language tokens only). With hints (``languages=es,en``: a call center knows
its languages) the answer is the argmax over the hinted tokens, its probability renormalised over them, which is
the softmax over those tokens' logits alone. Runs on the model thread, inside the backend's decode call.

Text of one language must not steer an utterance in another: Whisper, prompted with English text, tends to
*translate* Spanish speech into English. So a job whose detected language differs from its prompt's
(``DecodeJob.prompt_language``) is decoded again on its own audio, without prompt or context
(``carries_other_language``, ``on_its_own``: a step of ``repair.py``), once per change of language. And acoustic
context (earlier speech in the window) would sway the detection itself, so a job whose language is to be detected
is decoded without it (``needs_detection``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import ctranslate2

from .types import DecodeJob


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


def needs_detection(job: DecodeJob) -> bool:
    """Whether ``job``'s language is left to detection (no lock, and not a single hint)."""
    return job.options.language is None and len(set(job.options.languages)) != 1


def locked_language(job: DecodeJob) -> str | None:
    """The language ``job`` is decoded in without detection: its lock, or its only hint."""
    if job.options.language:
        return job.options.language
    return job.options.languages[0] if len(set(job.options.languages)) == 1 else None


def carries_other_language(job: DecodeJob, language: str) -> bool:
    """Whether ``job``'s rolling prompt or context is text of a language other than the detected ``language``
    (translations are English whatever the source: their prompt never is)."""
    has_text = bool(job.prompt_text.strip() or job.context_samples)
    return (
        has_text
        and job.options.task == "transcribe"
        and job.prompt_language is not None
        and job.prompt_language != language
    )


def on_its_own(job: DecodeJob, language: str) -> DecodeJob:
    """A new job decoding ``job``'s own audio again in ``language``, without rolling prompt or context (its
    kind, owner and options; the user's own prompt stays)."""
    return DecodeJob(
        owner=job.owner,
        kind=job.kind,
        audio=job.own_audio,
        options=replace(job.options, language=language),
    )
