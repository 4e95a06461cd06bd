"""The CTranslate2 Whisper backend: the model core (features, encode, language, generate with temperature fallback,
alignment). With ``loader.py`` the only module that imports ctranslate2 or faster_whisper.

faster-whisper loads the model and provides the feature extractor, tokenizer and word alignment; we call
CTranslate2's ``encode``/``generate`` ourselves, because ``BatchedInferencePipeline`` gives every item of a batch
the same prompt and only one temperature, while streaming needs a prompt per session and fallback per item.

One ``decode_batch`` call decodes the groups of ``batching.group`` one after another; per group, log-mel features
are computed per item, padded to the group's *trimmed* window (``batching.WindowPolicy``), encoded once and
generated once with a prompt per item. Items failing Whisper's quality checks (compression ratio, average
log-probability) are decoded again at the next temperature, only those items, as one sub-batch. What a result
still needs afterwards (retry, early stop, word times) is ``repair.py``'s, run by the engine.

A job with acoustic context (``DecodeJob.context_*``) has the context's text forced after the task tokens, as
faster-whisper forces a ``prefix``; the result, its scores and its word times cover only what follows.
See docs/decisions.md#trimmed-windows.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, replace

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, merge_punctuations

from .backend import AlignedWord, AlignRequest
from .batching import FRAMES_PER_SECOND, WindowPolicy, cut_prompt, group
from .language import detect_each, locked_language, needs_detection
from .repeats import drop_repeats
from .types import SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, JobKind

log = logging.getLogger(__name__)

HOP_SAMPLES = 160  # 10 ms mel frames at 16 kHz
# Text budget per item: read speech runs 3-5 tokens/s. Capping generation at 10 + 8 tokens per second of audio
# stops greedy repetition loops (seen on 0.5 s partials: one phrase repeated to the 448-token limit, which
# also cost a whole batch's time) without cutting real speech.
TOKENS_BASE = 10
# faster-whisper's defaults: punctuation is attached to the neighbouring word, as Whisper does.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
TOKENS_PER_SECOND = 8

# A context's text is forced into the 448-token decoder context after the prompt; past this it would crowd out
# the transcript (25 s of fast read speech is about 90 tokens).
MAX_CONTEXT_TOKENS = 128
# Encoder outputs of the last groups with finals, kept for their word alignment (the engine aligns a group's
# finals right after decoding it, before the next model call), so alignment does not encode the audio again.
ENCODED_KEPT = 2


@dataclass(frozen=True)
class _Encoded:
    """One group's encoder output: row ``i`` is ``job_ids[i]``'s audio in a window of ``window`` frames (the
    group's; the alignment uses it too, as the words were decoded from it)."""

    job_ids: tuple[int, ...]
    window: int
    output: ctranslate2.StorageView


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
        device: str,
        compute_type: str,
        cpu_threads: int,
        window: WindowPolicy,
        workers: int = 1,
    ) -> None:
        self.cpu_threads = cpu_threads
        self.workers = workers  # model replicas: calls from that many threads run in parallel
        self._fw = WhisperModel(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=workers
        )
        self.model: ctranslate2.models.Whisper = self._fw.model
        self.model_id = model_id
        self.device = self.model.device
        self.compute_type = compute_type
        self.is_multilingual = bool(self.model.is_multilingual)
        self.window = window
        self.feature_extractor = self._fw.feature_extractor
        self._tokenizers: dict[tuple[str, str | None], Tokenizer] = {}
        self._encoded: deque[_Encoded] = deque(maxlen=ENCODED_KEPT * workers)
        self._encoded_lock = threading.Lock()  # model threads append and search it
        self.alignment_encodes = 0  # alignments that had to encode their audio again (none had it kept)

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
        """The groups ``decode_batch`` decodes one after another, in its order, each job as it is decoded."""
        return [[job for job, _ in part] for part in self._groups(jobs)]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        results: dict[int, DecodeResult] = {}
        for part in self._groups(jobs):
            for (job, _), result in zip(part, self._decode_group(part)):
                results[job.job_id] = result
        return [results[job.job_id] for job in jobs]

    def align(self, requests: list[AlignRequest]) -> list[list[AlignedWord]]:
        """faster-whisper's word alignment (cross-attention DTW) of each request's tokens to its job's own audio,
        one encode per window and tokenizer.

        A job with context is aligned with its context's text in front, over the whole window (the alignment
        heads follow the text through the audio); the context's words are then dropped and the times made
        relative to the job's own audio."""
        by_call: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            window = self.window.frames_for(len(request.job.audio))
            by_call[(request.job.options.task, request.result.language, window)].append(i)
        aligned: dict[int, list[AlignedWord]] = {}
        for (task, language, window), indices in by_call.items():
            tokenizer = self.tokenizer(task, language)
            jobs = [requests[i].job for i in indices]
            kept = self._kept_encoding(jobs)
            if kept is None:
                self.alignment_encodes += 1
                encoder_output = self._encode([self._features(job.audio) for job in jobs], window)
            else:
                encoder_output, window = kept
            prefixes = [self._prefix(tokenizer, job) for job in jobs]
            alignments = self._fw.find_alignment(
                tokenizer,
                [prefix + list(requests[i].result.tokens) for i, prefix in zip(indices, prefixes)],
                encoder_output,
                [min(max(1, len(job.audio) // HOP_SAMPLES), window) for job in jobs],
            )
            for i, prefix, alignment in zip(indices, prefixes, alignments):
                job = requests[i].job
                words: list[AlignedWord] = _own_words(alignment, len(prefix), job.context_samples / SAMPLE_RATE)
                if requests[i].for_words:
                    merge_punctuations(words, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
                aligned[i] = words
        return [aligned[i] for i in range(len(requests))]

    def tokens_for(self, text: str) -> tuple[int, ...]:
        """The tokens of ``text`` as a transcript has them (every language shares one BPE vocabulary)."""
        return tuple(self._text_tokenizer().encode(" " + text))

    # --- internals

    def _kept_encoding(self, jobs: list[DecodeJob]) -> tuple[ctranslate2.StorageView, int] | None:
        """The encoder output ``jobs`` were decoded with and its window, if kept: the group's own when they are
        that group, in its order; their rows of it on the CPU; else None (to be encoded again)."""
        ids = tuple(job.job_id for job in jobs)
        with self._encoded_lock:
            encoded = list(self._encoded)
        for kept in reversed(encoded):
            if not set(ids) <= set(kept.job_ids):
                continue
            if ids == kept.job_ids:
                return kept.output, kept.window
            if self.device != "cpu":
                return None  # rows of a device array would go through host memory: encoding again is cheaper
            rows = [kept.job_ids.index(i) for i in ids]
            output = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(kept.output)[rows]))
            return output, kept.window
        return None

    def _text_tokenizer(self) -> Tokenizer:
        return self.tokenizer("transcribe", "en")  # (faster-whisper refuses language None)

    @staticmethod
    def _prefix(tokenizer: Tokenizer, job: DecodeJob) -> list[int]:
        """The context's text, forced after the task tokens (empty: no context)."""
        return list(tokenizer.encode(" " + job.context_text.strip())) if job.context_samples else []

    def _fit_context(self, job: DecodeJob) -> DecodeJob:
        """``job`` itself, or without its context where the context's text would crowd the transcript out of
        Whisper's 448 tokens or the audio would not fit one window with its margin (the session keeps within
        both; this guards other callers)."""
        if not job.context_samples:
            return job
        if self.is_multilingual and needs_detection(job):
            return job.without_context()  # earlier speech would sway the detection (language.py)
        tokens = len(self._text_tokenizer().encode(" " + job.context_text.strip()))
        if tokens > MAX_CONTEXT_TOKENS or not self.window.fits(job) or not job.context_text.strip():
            return job.without_context()
        return job

    def _groups(self, jobs: list[DecodeJob]) -> list[list[tuple[DecodeJob, list[int]]]]:
        """``batching.group`` of the jobs as decoded: a context that does not fit is dropped first, so ``split``
        and ``decode_batch`` group alike."""
        return group([self._fit_context(job) for job in jobs], self.window, self._previous_tokens)

    def _features(self, audio: np.ndarray) -> np.ndarray:
        frames = max(1, len(audio) // HOP_SAMPLES)
        features: np.ndarray = self.feature_extractor(audio, padding=HOP_SAMPLES)[:, :frames]
        return features

    def _encode(self, feats: list[np.ndarray], window_frames: int) -> ctranslate2.StorageView:
        batch = np.zeros((len(feats), feats[0].shape[0], window_frames), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(f.shape[1], window_frames)
            batch[i, :, :n] = f[:, :n]
        return self.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

    def _previous_tokens(self, job: DecodeJob) -> list[int]:
        """The user's initial prompt, whole, then the newest rolling text cut to a bucket (``cut_prompt``)."""
        tokenizer = self._text_tokenizer()
        options = job.options
        initial = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        previous = tokenizer.encode(" " + job.prompt_text.strip()) if job.prompt_text.strip() else []
        return cut_prompt(list(initial), list(previous))

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
                if result.looks_hallucinated(options) and not result.looks_silent(options):
                    still.append(i)
                else:
                    best[i] = result
            pending = still
            if not pending:
                break
        return [
            replace(self._tidy(item, r, options), window_s=window / FRAMES_PER_SECOND)
            for item, r in zip(items, best)
            if r is not None
        ]

    def _prepare(
        self, group: list[tuple[DecodeJob, list[int]]], window: int
    ) -> tuple[list[_Item], ctranslate2.StorageView]:
        """Features, language and prompt of each job, and the group's encoder output."""
        jobs = [job for job, _ in group]
        feats = [self._features(j.audio) for j in jobs]
        encoder_output = self._encode(feats, window)
        if any(job.kind is JobKind.FINAL for job in jobs):
            with self._encoded_lock:
                self._encoded.append(_Encoded(tuple(job.job_id for job in jobs), window, encoder_output))
        items = []
        for (job, previous), f, (lang, p) in zip(group, feats, self._languages(jobs, encoder_output)):
            tok = self.tokenizer(job.options.task, lang)
            prefix = self._prefix(tok, job)
            items.append(_Item(job, f, self._prompt(tok, previous) + prefix, tok, prefix, p))
        return items, encoder_output

    def _languages(
        self, jobs: list[DecodeJob], encoder_output: ctranslate2.StorageView
    ) -> list[tuple[str | None, float]]:
        """Each job's language and its probability: the one it names (1.0), else detected on the encoder output
        (``language.py``), among ``options.languages`` where that is set."""
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
        # CTranslate2 (4.8.5) generates at most min(max_length // 2, max_length - prompt) tokens (Whisper's
        # sample_len = n_text_ctx // 2, and the prompt counts); measured with prompts of 2-131 tokens. Without a
        # long prompt, prompt + budget alone would halve the budget (a 14.85 s Spanish final cut at 66 tokens).
        budget = int(TOKENS_BASE + TOKENS_PER_SECOND * longest_s)
        max_length = max(max(len(item.prompt) for item in items) + budget, 2 * budget)
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
            result = replace(result, text=text, tokens=tuple(item.tokenizer.encode(" " + text)))
        return self._silence_check(result, options)


def _own_words(alignment: list[AlignedWord], prefix_tokens: int, offset_s: float) -> list[AlignedWord]:
    """The words of an alignment after its first ``prefix_tokens`` tokens, timed from ``offset_s``."""
    if not prefix_tokens:
        return alignment
    words: list[AlignedWord] = []
    seen = 0
    for word in alignment:
        seen += len(word["tokens"])
        if seen > prefix_tokens:
            start = max(0.0, float(word["start"]) - offset_s)
            words.append({**word, "start": start, "end": max(start, float(word["end"]) - offset_s)})
    return words
