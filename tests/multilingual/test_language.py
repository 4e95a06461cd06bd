"""``decode/language.py``: language detection on the encoder output already computed, with and without hints.
Unit tests of the choice on hand-made scores, then the real ``base`` model on the non-English recordings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stream_server.decode.language import choose, detect, detect_each

from .conftest import Clip, needs_extra, non_english_clips

SCORES = [("<|es|>", 0.6), ("<|pt|>", 0.3), ("<|en|>", 0.06), ("<|de|>", 0.04)]


def test_without_hints_the_most_probable_language_wins() -> None:
    assert choose(SCORES, None) == ("es", 0.6)
    assert choose(list(reversed(SCORES)), ()) == ("es", 0.6)  # whatever the order of the scores


def test_hints_limit_the_choice_and_renormalise() -> None:
    language, probability = choose(SCORES, ("en", "de"))
    assert language == "en" and probability == pytest.approx(0.06 / 0.10)
    assert choose(SCORES, ("de", "es", "de")) == ("es", pytest.approx(0.6 / 0.64))
    assert choose(SCORES, ("de",)) == ("de", 1.0)


def test_hints_that_all_underflowed_are_equally_likely() -> None:
    assert choose([("<|es|>", 1.0), ("<|en|>", 0.0), ("<|de|>", 0.0)], ("en", "de"))[1] == 0.5


def test_hints_the_model_does_not_know_are_refused() -> None:
    with pytest.raises(ValueError, match="xx"):
        choose(SCORES, ("xx",))
    assert choose(SCORES, ("xx", "pt")) == ("pt", 1.0)  # unknown codes among known ones are ignored


def encode(model, clips: list[Clip]):  # noqa: ANN001, ANN201 (faster_whisper model -> StorageView)
    """The encoder output of ``clips`` padded to one window of their longest audio + 1 s (as the backend does)."""
    import ctranslate2

    feats = [model.feature_extractor(c.audio(), padding=160) for c in clips]
    frames = min(3000, max(f.shape[1] for f in feats) + 100)
    batch = np.zeros((len(feats), feats[0].shape[0], frames), dtype=np.float32)
    for i, f in enumerate(feats):
        n = min(f.shape[1], frames)
        batch[i, :, :n] = f[:, :n]
    return model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)


@needs_extra
@pytest.mark.parametrize("clip", non_english_clips(), ids=lambda c: c.name)
def test_each_recording_is_detected_right(base_model, clip: Clip) -> None:  # noqa: ANN001
    encoded = encode(base_model, [clip])
    [(language, probability)] = detect(base_model.model, encoded, None)
    assert language == clip.language
    assert 0.9 <= probability <= 1.0  # measured 0.95-1.0 on these clips

    [(hinted, hinted_p)] = detect(base_model.model, encoded, ("en", "de"))
    assert hinted in ("en", "de") and 0.0 <= hinted_p <= 1.0

    [(with_truth, truth_p)] = detect(base_model.model, encoded, ("en", clip.language))
    assert with_truth == clip.language and probability <= truth_p <= 1.0


@needs_extra
def test_one_batch_with_hints_per_item(base_model) -> None:  # noqa: ANN001
    clips = non_english_clips()
    if len(clips) < 3:
        pytest.skip("needs three non-English recordings")
    clips = clips[:3]
    hints: list[tuple[str, ...] | None] = [None, ("en", "de"), (clips[2].language, "en")]
    batched = detect_each(base_model.model, encode(base_model, clips), hints)
    assert batched[0][0] == clips[0].language
    assert batched[1][0] in ("en", "de")
    assert batched[2][0] == clips[2].language
    with pytest.raises(ValueError, match="hint sets"):
        detect_each(base_model.model, encode(base_model, clips), hints[:2])


@needs_extra
def test_detection_costs_a_small_part_of_a_decode(base_model) -> None:  # noqa: ANN001
    """Detection reuses the encoder output: one decoder step against a whole greedy decode of the utterance."""
    clips = non_english_clips()
    if not clips:
        pytest.skip("no non-English recordings")
    spanish = next((c for c in clips if c.language == "es"), clips[0])
    encoded = encode(base_model, [spanish])
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(base_model.hf_tokenizer, True, task="transcribe", language=spanish.language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]

    def best_of_three(run) -> float:  # noqa: ANN001
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times)

    detect_s = best_of_three(lambda: detect(base_model.model, encoded, None))
    decode_s = best_of_three(lambda: base_model.model.generate(encoded, [prompt], beam_size=1))
    assert detect_s < 0.10 * decode_s, (detect_s, decode_s)  # measured 2-5%
