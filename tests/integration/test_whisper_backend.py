"""The CTranslate2 Whisper backend with the embedded model: batching across sessions must not change results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stream_server.config import Settings, available_cores
from stream_server.decode.backend import AlignRequest
from stream_server.decode.batching import PROMPT_BUCKETS
from stream_server.decode.loader import default_cpu_threads, default_model_workers, load_backend
from stream_server.decode.repair import Redecode, Repair, decode_repaired
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind
from stream_server.decode.whisper_ct2 import WhisperBackend

from ..helpers import silence, synthesize, wer

SENTENCES = [
    "Thank you for calling customer support, how can I help you?",
    "The children are playing football in the park.",
    "Please send the quarterly report to the finance team.",
    "My favorite color is green and I like to read books.",
]
PROMPTS = ["", "Hello there.", "We talked about the budget for next year and the hiring plan. " * 3, "Yes."]


@pytest.fixture(scope="module")
def backend():
    return load_backend(Settings().backend_config())


@pytest.fixture(scope="module")
def clips():
    return [np.concatenate([synthesize(s), silence(0.3)]) for s in SENTENCES]


def jobs_for(clips, options: DecodeOptions) -> list[DecodeJob]:
    return [
        DecodeJob(f"s{i}", JobKind.FINAL, audio, options, prompt_text=prompt)
        for i, (audio, prompt) in enumerate(zip(clips, PROMPTS))
    ]


def test_a_batch_with_different_prompts_equals_one_at_a_time(backend, clips):
    options = DecodeOptions(temperatures=(0.0, 0.2, 0.4))
    batched = backend.decode_batch(jobs_for(clips, options))
    single = [backend.decode_batch([job])[0] for job in jobs_for(clips, options)]
    assert [r.text for r in batched] == [r.text for r in single]
    for sentence, result in zip(SENTENCES, batched):
        assert wer(sentence, result.text) <= 0.2, result.text
        assert result.window_s < 30  # trimmed encoder window
        assert 0.0 <= result.no_speech_prob <= 1.0


def test_a_result_does_not_depend_on_the_length_of_its_batch_mates(backend, clips):
    """Each item is encoded in its own window (audio plus margin), not the longest one of the batch."""
    short = clips[1][: int(1.6 * 16000)]
    long = np.concatenate([clips[0], silence(0.5), clips[2], silence(0.5), clips[3]])
    options = DecodeOptions(temperatures=(0.0, 0.2))
    jobs = [DecodeJob("a", JobKind.FINAL, short, options), DecodeJob("b", JobKind.FINAL, long, options)]
    batched = backend.decode_batch(jobs)
    single = [backend.decode_batch([DecodeJob(j.owner, j.kind, j.audio, options)])[0] for j in jobs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.window_s for r in batched] == [r.window_s for r in single]
    assert batched[0].window_s < batched[1].window_s


def test_split_names_the_model_calls_a_batch_takes(backend, clips):
    """The engine runs a batch one ``split`` part at a time and delivers each part's results at once."""
    options = DecodeOptions()
    a, b, c = (DecodeJob(o, JobKind.FINAL, audio, options) for o, audio in zip("abc", (clips[1], clips[0], clips[1])))
    long = DecodeJob("d", JobKind.FINAL, np.concatenate([clips[0], clips[2], clips[3]]), options)
    assert backend.split([a, long, b, c]) == [[a, b, c], [long]]  # by encoder window, in order of first arrival
    partial = DecodeJob("e", JobKind.PARTIAL, clips[1], replace(options, temperatures=(0.0,), beam_size=5))
    assert backend.split([a, partial]) == [[a], [partial]]  # generated differently: a call of its own


def test_prompt_lengths_fall_on_buckets_and_keep_the_newest_text(backend):
    job = DecodeJob(
        "s",
        JobKind.FINAL,
        np.zeros(16000, np.float32),
        DecodeOptions(initial_prompt="Grafana"),
        prompt_text="one two three four five six seven eight nine ten eleven twelve thirteen",
    )
    previous = backend._previous_tokens(job)
    tokenizer = backend.tokenizer("transcribe", "en")
    initial = tokenizer.encode(" Grafana")
    assert previous[: len(initial)] == initial  # the user's prompt is never cut
    assert len(previous) - len(initial) in PROMPT_BUCKETS
    assert tokenizer.decode(previous[len(initial) :]).endswith("thirteen")
    short = DecodeJob("s", JobKind.FINAL, np.zeros(16000, np.float32), DecodeOptions(initial_prompt="names"))
    assert tokenizer.decode(backend._previous_tokens(short)) == " names"


def test_word_timestamps_and_silence(backend, clips):
    words_job = DecodeJob("w", JobKind.FINAL, clips[1], DecodeOptions(word_timestamps=True))
    quiet_job = DecodeJob("q", JobKind.FINAL, silence(3.0), DecodeOptions(temperatures=(0.0, 0.2)))
    assert all(not r.words for r in backend.decode_batch([words_job, quiet_job]))  # words are a repair step
    words, quiet = decode_repaired(backend, [words_job, quiet_job])
    assert [w.word.strip() for w in words.words] == words.text.split()
    assert all(0 <= w.start <= w.end <= len(clips[1]) / 16000 + 0.1 for w in words.words)
    assert quiet.text == ""


def test_alignment_reuses_the_encoder_output_of_the_decode(backend, clips):
    """Word times come from the encoder output the final was decoded with (no second encode), for the whole
    group or some of its rows, and agree with times from a fresh encode."""
    jobs = [
        DecodeJob(f"a{i}", JobKind.FINAL, clip, DecodeOptions(word_timestamps=True)) for i, clip in enumerate(clips)
    ]
    results = backend.decode_batch(jobs)
    requests = [AlignRequest(job, result, for_words=True) for job, result in zip(jobs, results)]
    encodes = backend.alignment_encodes
    kept_all = backend.align(requests)
    kept_some = backend.align(requests[1:3])
    assert backend.alignment_encodes == encodes  # nothing encoded again
    backend._encoded.clear()
    fresh = backend.align(requests)
    assert backend.alignment_encodes > encodes
    for some, whole in zip(kept_some, kept_all[1:3]):  # (batch composition moves scores by rounding only)
        assert [w["word"] for w in some] == [w["word"] for w in whole]
        assert [w["start"] for w in some] == pytest.approx([w["start"] for w in whole], abs=0.05)
    for kept, again, result in zip(kept_all, fresh, results):
        assert [w["word"] for w in kept] == [w["word"] for w in again]
        assert "".join(w["word"] for w in kept).strip() == result.text.strip()
        # the group's window may be longer than the job's own: the times agree to within a few frames
        assert max(abs(a["start"] - b["start"]) + abs(a["end"] - b["end"]) for a, b in zip(kept, again)) <= 0.2


def test_an_early_end_of_transcript_is_continued(backend):
    """Whisper's early stop, made to order: the result of a two-sentence final cut after its first sentence.
    The repair aligns it, finds the uncovered audio, has it decoded as a job of its own and joins it on."""
    first, second = SENTENCES[2], SENTENCES[3]
    audio = np.concatenate([synthesize(first), silence(0.4), synthesize(second), silence(0.3)])
    job = DecodeJob("s", JobKind.FINAL, audio, DecodeOptions(temperatures=(0.0, 0.2)))
    (whole,) = decode_repaired(backend, [job])
    assert wer(f"{first} {second}", whole.text) <= 0.15, whole.text

    cut = whole.text.index(".") + 1
    stopped = replace(whole, text=whole.text[:cut], tokens=backend.tokens_for(whole.text[:cut]))
    repair = Repair(job, stopped)
    align = repair.plan()
    assert isinstance(align, AlignRequest) and not align.for_words  # a text short for its audio
    repair.merge(backend.align([align])[0], backend)
    rest = repair.plan()
    assert isinstance(rest, Redecode) and rest.job.owner == job.owner and rest.job.kind is JobKind.FINAL
    assert 1.0 < rest.job.own_s < job.own_s - 1.0  # the audio after the first sentence
    (tail,) = decode_repaired(backend, [rest.job])
    repair.merge(tail, backend)
    assert repair.plan() is None
    continued = repair.result
    assert continued.text.startswith(stopped.text)
    assert wer(f"{first} {second}", continued.text) <= 0.15, continued.text
    assert backend.tokens_for(continued.text) == continued.tokens

    # a whole text is left alone, and so are partials, however short their text
    assert Repair(job, whole).plan() is None
    assert Repair(replace(job, kind=JobKind.PARTIAL), stopped).plan() is None


def test_an_empty_decode_with_a_rolling_prompt_is_retried_without_it(backend, clips):
    """A final that came back empty (though not silent) while it carried a rolling prompt is decoded again
    without it, as a job of its own, and the retry's text is kept."""
    job = DecodeJob("s", JobKind.FINAL, clips[1], DecodeOptions(), prompt_text="... ... ...")
    (decoded,) = backend.decode_batch([job])
    empty = replace(decoded, text="", tokens=(), no_speech_prob=0.0)
    repair = Repair(job, empty)
    retry = repair.plan()
    assert isinstance(retry, Redecode) and retry.job.prompt_text == "" and retry.job.job_id != job.job_id
    (again,) = decode_repaired(backend, [retry.job])
    repair.merge(again, backend)
    assert repair.plan() is None
    assert repair.result.job_id == job.job_id and wer(SENTENCES[1], repair.result.text) <= 0.2


def test_a_repetition_loop_keeps_one_copy_in_text_and_tokens(backend, clips):
    """A loop the model really produced is not easy to order up; the tidy step runs on a real decode result
    with a loop appended, as Whisper writes them ("as was frequently the case" three times)."""
    job = DecodeJob("s", JobKind.FINAL, clips[1], DecodeOptions(word_timestamps=True))
    (result,) = backend.decode_batch([job])
    (item,) = backend._prepare([(job, backend._previous_tokens(job))], backend.window.frames_for(len(job.audio)))[0]
    looped = result.text + " as was frequently the case" * 3
    looped_result = replace(result, text=looped, tokens=backend.tokens_for(looped))
    tidy = backend._tidy(item, looped_result, job.options)
    assert tidy.text == result.text + " as was frequently the case"
    assert backend.tokens_for(tidy.text) == tidy.tokens


def test_default_cpu_threads_leave_a_core_for_the_event_loop(backend) -> None:
    assert [default_cpu_threads(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert [default_cpu_threads(cores, workers=4) for cores in (1, 2, 4, 16)] == [1, 1, 1, 3]  # shared by workers
    assert [default_model_workers("cpu", cores) for cores in (1, 2, 16)] == [1, 2, 16]
    assert default_model_workers("cuda", 16) == 1
    cores = available_cores()  # built with Settings() defaults: a one-thread worker per core
    assert (backend.workers, backend.cpu_threads) == (cores, default_cpu_threads(cores, cores)) == (cores, 1)
    assert load_backend(Settings(cpu_threads=3, model_workers=1).backend_config()).cpu_threads == 3


def test_two_model_workers_decode_in_parallel_threads_as_one_does(backend, clips):
    """``--model-workers 2``: two model replicas, called from two threads at once (as the engine's loops do),
    give each job the text one worker gives it, and words aligned from the kept encoder output."""
    from concurrent.futures import ThreadPoolExecutor

    options = DecodeOptions(temperatures=(0.0, 0.2))
    two = load_backend(Settings(model_workers=2).backend_config())
    assert two.workers == 2 and two.model.num_workers == 2 and two.cpu_threads >= 1

    def decode_and_align(model: WhisperBackend, job: DecodeJob) -> tuple[str, list[str]]:
        (result,) = model.decode_batch([job])
        (words,) = model.align([AlignRequest(job, result, for_words=True)])
        return result.text, [w["word"] for w in words]

    expected = [decode_and_align(backend, job) for job in jobs_for(clips, options)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="whisper-model") as pool:
        done = list(pool.map(lambda job: decode_and_align(two, job), jobs_for(clips, options) * 2))
    assert done == expected * 2
    assert two.alignment_encodes == 0  # every alignment found its own encoder output


def context_job(clips, options: DecodeOptions, context_text: str | None = None) -> DecodeJob:
    """The second sentence, with the first one's audio and text in front of it as acoustic context."""
    context = clips[0]
    return DecodeJob(
        "c",
        JobKind.FINAL,
        np.concatenate([context, clips[1]]),
        options,
        prompt_text="Hello.",
        context_samples=len(context),
        context_text=SENTENCES[0] if context_text is None else context_text,
    )


def test_a_final_with_context_returns_only_its_own_text_and_words(backend, clips):
    job = context_job(clips, DecodeOptions(temperatures=(0.0, 0.2), word_timestamps=True))
    (result,) = decode_repaired(backend, [job])
    assert wer(SENTENCES[1], result.text) <= 0.2, result.text  # not the context's words again
    assert item_text(backend, job, result) == result.text
    assert [w.word.strip() for w in result.words] == result.text.split()
    own_s = len(clips[1]) / 16000
    assert all(0 <= w.start <= w.end <= own_s + 0.1 for w in result.words)  # times from the job's own audio
    assert result.words[0].start < 1.0 and result.words[-1].end > own_s - 1.5
    # scored on its own tokens: as sure of itself as without the context
    (alone,) = backend.decode_batch([job.without_context()])
    assert wer(SENTENCES[1], alone.text) <= 0.2, alone.text
    assert -0.5 < result.avg_logprob < 0 and abs(result.avg_logprob - alone.avg_logprob) < 0.3


def item_text(backend, job, result) -> str:
    return backend.tokenizer("transcribe", "en").decode(list(result.tokens)).strip()


def test_items_with_and_without_context_batch_together_as_they_decode_alone(backend, clips):
    options = DecodeOptions(temperatures=(0.0, 0.2))
    with_context = context_job(clips, options)
    padded = np.concatenate([clips[3], np.zeros(len(with_context.audio) - len(clips[3]), dtype=np.float32)])
    plain = DecodeJob("p", JobKind.FINAL, padded, options, prompt_text="Hello.")
    assert backend.window.frames_for(len(plain.audio)) == backend.window.frames_for(len(with_context.audio))
    assert len(backend.split([with_context, plain])) == 1  # one model call
    batched = backend.decode_batch([with_context, plain])
    single = [backend.decode_batch([job])[0] for job in (with_context, plain)]
    assert [r.text for r in batched] == [r.text for r in single]
    assert wer(SENTENCES[1], batched[0].text) <= 0.2 and wer(SENTENCES[3], batched[1].text) <= 0.2


def test_a_context_too_long_for_the_window_or_the_text_budget_is_dropped(backend, clips):
    options = DecodeOptions()
    too_long_audio = replace(
        context_job(clips, options),
        audio=np.concatenate([silence(26.0), clips[0], clips[1]]),
        context_samples=int(26.0 * 16000) + len(clips[0]),
    )
    too_many_words = context_job(clips, options, context_text=" ".join(SENTENCES * 12))
    for job in (too_long_audio, too_many_words):
        fitted = backend._fit_context(job)
        assert fitted.context_samples == 0 and fitted.prompt_text == f"Hello. {job.context_text}"
        np.testing.assert_array_equal(fitted.audio, clips[1])
        ((split,),) = backend.split([job])  # the engine's view of the calls agrees with decode_batch's
        assert split.job_id == job.job_id and split.context_samples == 0
        (result,) = backend.decode_batch([job])
        assert wer(SENTENCES[1], result.text) <= 0.2, result.text
    fits = context_job(clips, options)
    assert backend._fit_context(fits) is fits
