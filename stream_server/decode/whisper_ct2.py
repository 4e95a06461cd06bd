"""The CTranslate2 Whisper backend: the only module that imports ctranslate2 or faster_whisper.

faster-whisper loads the model (a CTranslate2 directory or a size name it may download) and provides the
feature extractor, tokenizer and word alignment; we call CTranslate2's ``encode``/``generate`` ourselves,
because ``BatchedInferencePipeline`` gives every item of a batch the same prompt and only one temperature,
while streaming needs a prompt per session and fallback per item.

One ``decode_batch`` call: jobs are grouped by how they generate (beam size, temperatures, word
timestamps), by prompt length and by encoder window; per group, log-mel features are computed per item, padded
to the group's *trimmed* window, encoded once and generated once with a prompt per item. An item's window
depends on its own audio only, never on its batch-mates: the text of a final must not depend on how busy the
server is. (Seen before windows were grouped: a 1.9 s fragment decoded alone in a 4 s window gave "by Arthur
Griffiths", batched with a longer final in a 6 s window "by"; short unclear fragments swing with the window.)

Items failing Whisper's quality checks (compression ratio, average log-probability) are decoded again at the
next temperature, only those items, as one sub-batch.

A job with acoustic context (``DecodeJob.context_*``: earlier speech in front of its audio, with that speech's
final text) has the text forced after the task tokens, as faster-whisper forces a ``prefix``; the result, its
scores and its word times cover only what follows. Items with and without context share a call when their
windows and prompt lengths match (CTranslate2 takes prefixes of any length in one batch).

Trimmed windows. CTranslate2 accepts mel windows shorter than Whisper's 3000 frames (30 s) and refuses longer
ones, so the encoder can see just the utterance. Measured here (tiny.en int8, 2 cores, ctranslate2 4.8.5) on the
50 LibriSpeech utterances of ../shared/audio (2-12 s), greedy, batches of 8: padded to 30 s 26.5 s and WER 9.6%;
trimmed to audio + 1 s rounded up to 2 s (at least 4 s) 8.1 s and WER 9.1%; audio + 0.5 s in 1 s steps 8.1 s
and 9.5%; audio + 2 s 11.5 s and 9.7%. Beam 5 on trimmed windows: 13.7 s, 9.4%. So trimming is worth it for
partials and finals alike: 3.3x less compute at no loss of accuracy. A window barely longer than the speech
loses final words (DESIGN.md: 600 frames for 4-6 s utterances, WER 17.7%), hence the margin of silence.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, replace

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, merge_punctuations

from .language import carries_other_language, detect_each, locked_language, needs_detection, on_its_own
from .repeats import drop_repeats, word_key
from .types import SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, JobKind, Word

log = logging.getLogger(__name__)

FULL_WINDOW_FRAMES = 3000
HOP_SAMPLES = 160  # 10 ms mel frames at 16 kHz
# Text budget per item: read speech runs 3-5 tokens/s. Capping generation at 10 + 8 tokens per second of audio
# stops greedy repetition loops (seen on 0.5 s partials: one phrase repeated to the 448-token limit, which
# also cost a whole batch's time) without cutting real speech.
TOKENS_BASE = 10
# faster-whisper's defaults: punctuation is attached to the neighbouring word, as Whisper does.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
TOKENS_PER_SECOND = 8
# Early stops (see ``_continue_early_stops``): finals and uploads of at least EARLY_STOP_MIN_AUDIO_S whose text
# runs under EARLY_STOP_CHARS_PER_S of audio are aligned to it (read speech runs 12-16 characters a second);
# when more than EARLY_STOP_MIN_REST_S of audio follows the last word, the rest is decoded on its own.
EARLY_STOP_MIN_AUDIO_S = 4.0
EARLY_STOP_CHARS_PER_S = 10.0
EARLY_STOP_MIN_REST_S = 1.5


def available_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_cpu_threads(cores: int) -> int:
    """CTranslate2 threads when none are set: one core stays for the event loop (websockets, VAD, features).
    An OpenMP region waits for its slowest thread, so a model thread that loses its core to the loop stalls
    the whole call. On the 2-core machine one thread held 32 streams at p95 final latency 0.95-1.00 s where two
    held 16 (p95 1.30-1.73 s at 32), and uploads ran 40.7 against 26.7 audio seconds per second."""
    return max(1, cores - 1)


@dataclass(frozen=True)
class WindowPolicy:
    """How many mel frames the encoder sees for audio of a given length."""

    min_window_s: float = 4.0
    margin_s: float = 1.0
    step_s: float = 2.0
    full_window: bool = False

    def frames_for(self, n_samples: int) -> int:
        if self.full_window:
            return FULL_WINDOW_FRAMES
        seconds = max(self.min_window_s, n_samples / 16000 + self.margin_s)
        seconds = math.ceil(seconds / self.step_s) * self.step_s
        return min(FULL_WINDOW_FRAMES, int(round(seconds * 100)))


# CTranslate2 requires <|startoftranscript|> at the same position in every prompt of a generate() call, so
# the previous-text tokens of one call must have one length. Each item's rolling text is cut (oldest tokens
# first) to the largest of these lengths it reaches, and items are grouped by their whole prompt length. Measured
# by the benchmark helper: left-padding instead ruins accuracy (<|startofprev|> padding 91% WER, spaces 33%).
# The cut depends on the item alone, never on its batch-mates, so a result is the same however the batch was
# formed; sessions past their first few utterances all carry 128+ tokens and share one group. The user's own
# prompt is never cut (up to Whisper's limit): sessions with one group by its length.
PROMPT_BUCKETS = (0, 8, 16, 32, 64, 128)
MAX_PREVIOUS_TOKENS = 223  # Whisper's n_text_ctx // 2 - 1
# A context's text is forced into the 448-token decoder context after the prompt; past this it would crowd out
# the transcript (25 s of fast read speech is about 90 tokens).
MAX_CONTEXT_TOKENS = 128


@dataclass
class _Item:
    job: DecodeJob
    features: np.ndarray  # [n_mels, content_frames]
    prompt: list[int]  # ends with ``prefix``
    tokenizer: Tokenizer
    prefix: list[int]  # the context's text, forced after the task tokens (empty: no context)
    language_probability: float = 1.0


class WhisperBackend:
    """Implements ``DecodeBackend`` on a CTranslate2 Whisper model."""

    def __init__(
        self,
        model_path: str,
        model_id: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        window: WindowPolicy | None = None,
    ) -> None:
        self.cpu_threads = cpu_threads or default_cpu_threads(available_cores())
        # Sampled fallback text is not reproducible call to call: CTranslate2 seeds each worker thread's
        # generator once, from this seed, so what a fallback samples depends on what was sampled before.
        ctranslate2.set_random_seed(0)
        self._fw = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=self.cpu_threads)
        self.model: ctranslate2.models.Whisper = self._fw.model
        self.model_id = model_id
        self.device = self.model.device
        self.compute_type = compute_type
        self.is_multilingual = bool(self.model.is_multilingual)
        self.window = window or WindowPolicy()
        self.feature_extractor = self._fw.feature_extractor
        self._tokenizers: dict[tuple[str, str | None], Tokenizer] = {}

    @property
    def languages(self) -> list[str]:
        return list(self._fw.supported_languages)

    def tokenizer(self, task: str, language: str | None) -> Tokenizer:
        if not self.is_multilingual:
            task, language = "transcribe", "en"
        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self._fw.hf_tokenizer, self.is_multilingual, task=task, language=language)
        return self._tokenizers[key]

    # --- DecodeBackend

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        """The groups ``decode_batch`` decodes one after another, in its order."""
        return [[job for job, _ in group] for group in self._groups(jobs)]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        results: dict[int, DecodeResult] = {}
        for group in self._groups(jobs):
            for (job, _), result in zip(group, self._decode_group(group)):
                results[job.job_id] = result
        return [results[job.job_id] for job in jobs]

    # --- internals

    def _fit_context(self, job: DecodeJob) -> DecodeJob:
        """``job`` itself, or without its context where the context's text would crowd the transcript out of
        Whisper's 448 tokens or the audio would not fit one window with its margin (the session keeps within
        both; this guards other callers)."""
        if not job.context_samples:
            return job
        if self.is_multilingual and needs_detection(job):
            return job.without_context()  # earlier speech would sway the detection (language.py)
        tokens = len(
            self.tokenizer(job.options.task, locked_language(job) or "en").encode(" " + job.context_text.strip())
        )
        window_s = len(job.audio) / SAMPLE_RATE + self.window.margin_s
        if tokens > MAX_CONTEXT_TOKENS or window_s > FULL_WINDOW_FRAMES / 100 or not job.context_text.strip():
            return job.without_context()
        return job

    def _groups(self, jobs: list[DecodeJob]) -> list[list[tuple[DecodeJob, list[int]]]]:
        """Jobs that share one encode and one generate: same way of generating, prompt length and encoder
        window (whatever their task and language); each with its previous-text tokens. A context that does not
        fit is dropped first, so ``split`` and ``decode_batch`` group alike."""
        groups: dict[tuple, list[tuple[DecodeJob, list[int]]]] = defaultdict(list)
        for job in map(self._fit_context, jobs):
            o = job.options
            previous = self._previous_tokens(job)
            window = self.window.frames_for(len(job.audio))
            # not task or language: they are tokens of each item's own prompt, all of one length
            key = (o.beam_size, o.temperatures, o.word_timestamps, len(previous), window)
            groups[key].append((job, previous))
        return list(groups.values())

    def _features(self, audio: np.ndarray) -> np.ndarray:
        frames = max(1, len(audio) // HOP_SAMPLES)
        return self.feature_extractor(audio, padding=HOP_SAMPLES)[:, :frames]

    def _encode(self, feats: list[np.ndarray], window_frames: int) -> ctranslate2.StorageView:
        batch = np.zeros((len(feats), feats[0].shape[0], window_frames), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(f.shape[1], window_frames)
            batch[i, :, :n] = f[:, :n]
        return self.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

    def _previous_tokens(self, job: DecodeJob) -> list[int]:
        """The user's initial prompt, whole, then the newest rolling text cut to a ``PROMPT_BUCKETS`` length.
        (Every language shares one BPE vocabulary, so the task/language of the tokenizer does not matter.)"""
        tokenizer = self.tokenizer("transcribe", "en")
        options = job.options
        initial = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        initial = initial[:MAX_PREVIOUS_TOKENS]
        previous = tokenizer.encode(" " + job.prompt_text.strip()) if job.prompt_text.strip() else []
        room = min(len(previous), MAX_PREVIOUS_TOKENS - len(initial))
        length = max(b for b in PROMPT_BUCKETS if b <= room)
        return initial + previous[len(previous) - length :]

    @staticmethod
    def _prompt(tokenizer: Tokenizer, previous: list[int]) -> list[int]:
        """``[<|startofprev|> previous] <|startoftranscript|> [lang] task <|notimestamps|>``."""
        head = [tokenizer.sot_prev, *previous] if previous else []
        return head + list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]

    def _decode_group(self, group: list[tuple[DecodeJob, list[int]]]) -> list[DecodeResult]:
        options = group[0][0].options
        window = max(self.window.frames_for(len(job.audio)) for job, _ in group)
        items, encoder_output = self._prepare(group, window)

        best: list[DecodeResult | None] = [None] * len(items)
        pending = list(range(len(items)))
        for round_index, temperature in enumerate(options.temperatures):
            if round_index > 0:  # fallback rounds re-encode only the items that need them
                encoder_output = self._encode([items[i].features for i in pending], window)
            outputs = self._generate(encoder_output, [items[i] for i in pending], options, temperature)
            still: list[int] = []
            for i, result in zip(pending, outputs):
                current = best[i]
                if current is None or result.avg_logprob > current.avg_logprob:
                    best[i] = result
                bad = result.compression_ratio > options.compression_ratio_threshold or (
                    result.avg_logprob < options.log_prob_threshold
                )
                if bad and not result.looks_silent(options):
                    still.append(i)
                else:
                    best[i] = result
            pending = still
            if not pending:
                break

        finished = [self._tidy(item, r, options) for item, r in zip(items, best) if r is not None]
        finished = self._retry_without_prompt(items, finished)
        finished = self._continue_early_stops(items, finished, window)
        if options.word_timestamps:
            finished = self._add_words(items, finished, window)
        finished = [replace(r, window_s=window / 100) for r in finished]
        return self._redo_other_language(items, finished)

    def _redo_other_language(self, items: list[_Item], results: list[DecodeResult]) -> list[DecodeResult]:
        """Items whose prompt or context is text of another language than the one detected, decoded again on
        their own (``language.py``): rare, once per change of language in a stream."""
        redo = [
            (i, on_its_own(item.job, item.tokenizer.language_code))
            for i, item in enumerate(items)
            if carries_other_language(item.job, item.tokenizer.language_code)
        ]
        if not redo:
            return results
        out = list(results)
        for (i, _), again in zip(redo, self.decode_batch([job for _, job in redo])):
            out[i] = replace(again, language_probability=items[i].language_probability)
        return out

    def _prepare(
        self, group: list[tuple[DecodeJob, list[int]]], window: int
    ) -> tuple[list[_Item], ctranslate2.StorageView]:
        """Features, language and prompt of each job, and the group's encoder output."""
        jobs = [job for job, _ in group]
        feats = [self._features(j.audio) for j in jobs]
        encoder_output = self._encode(feats, window)
        items = []
        for (job, previous), f, (lang, p) in zip(group, feats, self._languages(jobs, encoder_output)):
            tok = self.tokenizer(job.options.task, lang)
            prefix = tok.encode(" " + job.context_text.strip()) if job.context_samples else []
            items.append(_Item(job, f, self._prompt(tok, previous) + prefix, tok, prefix, p))
        return items, encoder_output

    def items_for(self, jobs: list[DecodeJob]) -> list[_Item]:
        """What ``decode_batch`` prepares for ``jobs`` (tests drive the steps after generation with it)."""
        window = max(self.window.frames_for(len(job.audio)) for job in jobs)
        return self._prepare([(job, self._previous_tokens(job)) for job in jobs], window)[0]

    def _languages(
        self, jobs: list[DecodeJob], encoder_output: ctranslate2.StorageView
    ) -> list[tuple[str | None, float]]:
        """Each job's language and its probability: the one it names (1.0), else the most likely of the
        model's scores, among ``options.languages`` where that is set."""
        if not self.is_multilingual:
            return [("en", 1.0)] * len(jobs)
        locked = [locked_language(j) for j in jobs]
        if all(locked):
            return [(language, 1.0) for language in locked]
        known = set(self.languages)  # hints are validated upstream; an unknown one must not fail the batch
        hints = [[code for code in j.options.languages if code in known] or None for j in jobs]
        detected = detect_each(self.model, encoder_output, hints)
        return [(language, 1.0) if language else found for language, found in zip(locked, detected)]

    def _generate(
        self,
        encoder_output: ctranslate2.StorageView,
        items: list[_Item],
        options: DecodeOptions,
        temperature: float,
    ) -> list[DecodeResult]:
        sampling = temperature > 0
        longest_s = max(len(item.job.audio) for item in items) / 16000
        # CTranslate2 (4.8.5) stops Whisper at max_length // 2 new tokens, the prompt not counted (Whisper's
        # sample_len = n_text_ctx // 2); measured: max_length 20 -> 10 tokens, 132 -> 66, whatever the prompt.
        max_length = 2 * int(TOKENS_BASE + TOKENS_PER_SECOND * longest_s)
        outputs = self.model.generate(
            encoder_output,
            [item.prompt for item in items],
            beam_size=1 if sampling else options.beam_size,
            sampling_temperature=temperature if sampling else 1.0,
            sampling_topk=0 if sampling else 1,
            max_length=min(self._fw.max_length, max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        results = []
        for item, out in zip(items, outputs):
            # the sequence starts with the forced prefix; CTranslate2 scores only the tokens after it (and the
            # end of text) but divides their sum by the whole length
            sequence = out.sequences_ids[0]
            tokens = [t for t in sequence[len(item.prefix) :] if t < item.tokenizer.eot]
            text = item.tokenizer.decode(tokens).strip()
            cumulative = out.scores[0] * max(1, len(sequence))
            avg_logprob = cumulative / (len(tokens) + 1) if tokens else out.scores[0]
            results.append(
                DecodeResult(
                    job_id=item.job.job_id,
                    text=text,
                    tokens=tuple(tokens),
                    language=item.tokenizer.language_code,
                    avg_logprob=float(avg_logprob),
                    compression_ratio=get_compression_ratio(text) if text else 0.0,
                    no_speech_prob=float(out.no_speech_prob),
                    temperature=temperature,
                    language_probability=item.language_probability,
                )
            )
        return results

    @staticmethod
    def _silence_check(result: DecodeResult, options: DecodeOptions) -> DecodeResult:
        """Whisper's no-speech rule (likely silence and an unsure decode -> no text), plus: text without a
        letter or digit is no text (seen on digital silence: ". . . . . ." that passed the log-prob test)."""
        if result.looks_silent(options) or not any(ch.isalnum() for ch in result.text):
            return replace(result, text="", tokens=())
        return result

    def _tidy(self, item: _Item, result: DecodeResult, options: DecodeOptions) -> DecodeResult:
        """One copy of a repetition loop (``repeats.py``; tokens follow the text, so word timestamps do too),
        then the silence check."""
        text = drop_repeats(result.text, item.job.own_s)
        if text != result.text:
            result = _with_text(item, result, text)
        return self._silence_check(result, options)

    def _retry_without_prompt(self, items: list[_Item], results: list[DecodeResult]) -> list[DecodeResult]:
        """A final or upload chunk that decoded to no text, though Whisper did not call it silence, while it
        carried a rolling prompt, is decoded once more without that prompt (the user's own prompt stays).
        Seen with beam search on ../shared/audio: a loop of "... ... ..." went into one stream's rolling prompt
        and its next two finals, 7 and 9 s of clear speech, came back empty."""
        retries = []
        for i, (item, r) in enumerate(zip(items, results)):
            job = item.job
            if (
                job.kind is not JobKind.PARTIAL
                and not r.text
                and job.prompt_text.strip()
                and not r.looks_silent(job.options)
            ):
                retries.append((i, _derived_job(job, job.own_audio, "", item.tokenizer.language_code)))
        if not retries:
            return results
        out = list(results)
        for (i, _), retry in zip(retries, self.decode_batch([job for _, job in retries])):
            if retry.text:
                log.debug("empty decode retried without the rolling prompt: %r", retry.text)
                out[i] = replace(retry, job_id=results[i].job_id)
        return out

    def _continue_early_stops(self, items: list[_Item], results: list[DecodeResult], window: int) -> list[DecodeResult]:
        """Decode the audio an early end-of-transcript left out, and append its text.

        Without timestamp tokens Whisper cannot say where its text ended, and it sometimes ends long before
        the audio does. Seen (tiny.en, a 12.6 s LibriSpeech final): "... would be worth much in nodding him
        fair." and nothing of the last 4.5 s, "Nay, nay, lording, answered Warrenton with a half-laugh", which
        faster-whisper's 30 s timestamped windows catch by seeking to the last timestamp. Here a final or
        upload chunk whose text is short for its audio is aligned to the audio (cross-attention DTW, as for
        word timestamps); when the last word ends well before the audio, the rest is decoded as its own job
        (the text so far as its prompt) and joined on unless it looks like silence or a bad decode. Partials
        are left alone: the next partial or the final comes soon."""
        suspects = [
            i
            for i, (item, r) in enumerate(zip(items, results))
            if item.job.kind is not JobKind.PARTIAL
            and r.tokens
            and item.job.own_s >= EARLY_STOP_MIN_AUDIO_S
            and len(r.text) < EARLY_STOP_CHARS_PER_S * item.job.own_s
        ]
        if not suspects:
            return results
        rests: list[tuple[int, DecodeJob]] = []
        for i, alignment in self._align(items, results, suspects, window).items():
            job = items[i].job
            # punctuation is aligned on its own and soaks up the silence after it: the last word decides
            last_end = max((float(a["end"]) for a in alignment if any(c.isalnum() for c in a["word"])), default=0.0)
            # at least 1 s must be covered, so every continuation is shorter than the job it continues
            if last_end < 1.0 or job.own_s - last_end < EARLY_STOP_MIN_REST_S:
                continue
            prompt = f"{job.prompt_text} {job.context_text} {results[i].text}"
            rest = _derived_job(
                job, job.own_audio[int(last_end * SAMPLE_RATE) :], prompt, items[i].tokenizer.language_code
            )
            rests.append((i, rest))
        if not rests:
            return results
        out = list(results)
        options = items[0].job.options
        for (i, _), tail in zip(rests, self.decode_batch([job for _, job in rests])):
            if not tail.text or tail.avg_logprob < options.log_prob_threshold:
                continue
            log.debug("early stop continued: %r + %r", results[i].text, tail.text)
            out[i] = _with_text(items[i], results[i], _join_continuation(results[i].text, tail.text))
        return out

    def _align(
        self, items: list[_Item], results: list[DecodeResult], indices: list[int], window: int
    ) -> dict[int, list[dict]]:
        """faster-whisper's word alignment of ``results[i].tokens`` to item ``i``'s own audio, for ``indices``.

        An item with context is aligned with its context's text in front, over the whole window (the alignment
        heads follow the text through the audio); the context's words are then dropped and the times made
        relative to the item's own audio."""
        by_language: dict[str, list[int]] = defaultdict(list)
        for i in indices:
            by_language[results[i].language].append(i)
        aligned: dict[int, list[dict]] = {}
        for group in by_language.values():
            encoder_output = self._encode([items[i].features for i in group], window)
            alignments = self._fw.find_alignment(
                items[group[0]].tokenizer,
                [items[i].prefix + list(results[i].tokens) for i in group],
                encoder_output,
                [min(items[i].features.shape[1], window) for i in group],
            )
            for i, alignment in zip(group, alignments):
                aligned[i] = _own_words(alignment, len(items[i].prefix), items[i].job.context_samples / SAMPLE_RATE)
        return aligned

    def _add_words(self, items: list[_Item], results: list[DecodeResult], window: int) -> list[DecodeResult]:
        out = list(results)
        with_text = [i for i, r in enumerate(results) if r.tokens]
        for i, alignment in self._align(items, results, with_text, window).items():
            merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
            words = tuple(
                Word(
                    a["word"], round(float(a["start"]), 3), round(float(a["end"]), 3), round(float(a["probability"]), 4)
                )
                for a in alignment
                if a["word"].strip()
            )
            out[i] = replace(results[i], words=words)
        return out


def _own_words(alignment: list[dict], prefix_tokens: int, offset_s: float) -> list[dict]:
    """The words of an alignment after its first ``prefix_tokens`` tokens, timed from ``offset_s``."""
    if not prefix_tokens:
        return alignment
    words, seen = [], 0
    for word in alignment:
        seen += len(word["tokens"])
        if seen > prefix_tokens:
            start = max(0.0, float(word["start"]) - offset_s)
            words.append({**word, "start": start, "end": max(start, float(word["end"]) - offset_s)})
    return words


def _with_text(item: _Item, result: DecodeResult, text: str) -> DecodeResult:
    """``result`` with its text replaced; the tokens follow the text, so word alignment does too."""
    return replace(result, text=text, tokens=tuple(item.tokenizer.encode(" " + text)))


def _derived_job(job: DecodeJob, audio: np.ndarray, prompt_text: str, language: str) -> DecodeJob:
    """A second decode on behalf of ``job`` (its kind, owner and options, in the language it was decoded in;
    words are aligned afterwards)."""
    return DecodeJob(
        owner=job.owner,
        kind=job.kind,
        audio=audio,
        options=replace(job.options, word_timestamps=False, language=language),
        prompt_text=prompt_text,
    )


def _join_continuation(text: str, rest: str) -> str:
    """``text`` then ``rest``, without a word said at the cut twice ("fair. Fair. Nay, nay")."""
    head, tail = text.split(), rest.split()
    if head and tail and word_key(head[-1]) and word_key(head[-1]) == word_key(tail[0]):
        tail = tail[1:]
    return " ".join(head + tail)


def load_backend(settings) -> WhisperBackend:  # settings: config.Settings (no import: keep the flow one-way)
    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = settings.resolved_compute_type(device)
    log.info("loading model %s on %s (%s)", settings.resolved_model_path(), device, compute_type)
    return WhisperBackend(
        settings.resolved_model_path(),
        settings.resolved_model_id(),
        device=device,
        compute_type=compute_type,
        cpu_threads=settings.cpu_threads,
        window=WindowPolicy(
            settings.min_window_s, settings.window_margin_s, settings.window_step_s, settings.full_window
        ),
    )
