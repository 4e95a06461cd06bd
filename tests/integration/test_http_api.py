"""The OpenAI-compatible batch API against a real server with the embedded model, through the official
``openai`` client (and raw HTTP where the wire format itself is what is tested)."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.helpers import manifest, silence, synthesize, wer, write_wav
from tests.transport.test_formats import parse_srt, parse_vtt

FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "The weather today is sunny with a light breeze from the west."
TEXT = f"{FIRST} {SECOND}"

# The client marks ``audio.translations`` deprecated (OpenAI's own models); the endpoint is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

# container -> ffmpeg output options; rates and channel counts vary on purpose (the server resamples).
FFMPEG_FORMATS: dict[str, list[str]] = {
    "mp3": ["-ar", "22050", "-c:a", "libmp3lame", "-f", "mp3"],
    "mpga": ["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-f", "mp3"],
    "mp4": ["-ar", "48000", "-ac", "2", "-c:a", "aac", "-f", "mp4"],
    "m4a": ["-ar", "44100", "-c:a", "aac", "-f", "ipod"],
    "mpeg": ["-ar", "44100", "-ac", "2", "-c:a", "mp2", "-f", "mpeg"],
    "wav": ["-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le", "-f", "wav"],
    "webm": ["-ar", "48000", "-c:a", "libopus", "-f", "webm"],
    "flac": ["-ar", "16000", "-c:a", "flac", "-f", "flac"],
    "ogg": ["-ar", "32000", "-c:a", "libvorbis", "-f", "ogg"],
}


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sentences with a 3 s pause: two segments, and room to check cue and word times."""
    audio = np.concatenate([silence(0.5), synthesize(FIRST), silence(3.0), synthesize(SECOND), silence(0.7)])
    return write_wav(tmp_path_factory.mktemp("http") / "speech.wav", audio)


@pytest.fixture(scope="module")
def duration_s(speech_wav: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(speech_wav)).duration)


@pytest.fixture(scope="module")
def uploads(speech_wav: Path) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg binary is needed to make the test uploads (apt-get install ffmpeg)")
    out: dict[str, Path] = {}
    for ext, options in FFMPEG_FORMATS.items():
        target = speech_wav.with_name(f"speech-upload.{ext}")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(speech_wav), *options, str(target)], check=True)
        out[ext] = target
    return out


@pytest.fixture(scope="module")
def client(live_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


def _upload(path: Path) -> tuple[str, bytes]:
    return (path.name, path.read_bytes())


def _error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


# --- formats and endpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(FFMPEG_FORMATS))
def test_every_upload_format(client: openai.OpenAI, uploads: dict[str, Path], ext: str) -> None:
    result = client.audio.transcriptions.create(file=_upload(uploads[ext]), model="whisper-1")
    assert wer(TEXT, result.text) <= 0.15, result.text


def _create(client: openai.OpenAI, endpoint: str, path: Path, **kwargs: Any) -> Any:
    api = client.audio.transcriptions if endpoint == "transcriptions" else client.audio.translations
    return api.create(file=_upload(path), model="whisper-1", **kwargs)


def _check_cues(cues: list[tuple[float, float, list[str]]], duration_s: float) -> None:
    assert cues
    previous_start, previous_end = -1.0, 0.0
    for start, end, lines in cues:
        assert start > previous_start and start >= previous_end - 1e-3
        assert 0.0 <= start <= end <= duration_s + 1e-3
        assert 1 <= len(lines) <= 2 and all(0 < len(line) <= 42 for line in lines)
        previous_start, previous_end = start, end


@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_response_formats(
    client: openai.OpenAI, speech_wav: Path, duration_s: float, endpoint: str, response_format: str
) -> None:
    result = _create(client, endpoint, speech_wav, response_format=response_format)
    if response_format == "json":
        text = result.text
    elif response_format == "text":
        assert isinstance(result, str) and result.endswith("\n")
        text = result
    elif response_format in ("srt", "vtt"):
        cues = parse_srt(result) if response_format == "srt" else parse_vtt(result)
        _check_cues(cues, duration_s)
        # The pause between the sentences separates them in time.
        second_start = next(start for start, _, lines in cues if "weather" in " ".join(lines))
        assert second_start > 4.0
        text = " ".join(" ".join(lines) for _, _, lines in cues)
    else:
        assert result.task == ("transcribe" if endpoint == "transcriptions" else "translate")
        assert result.language == "english" and abs(result.duration - duration_s) < 0.05
        assert len(result.segments) == 2 and getattr(result, "words", None) is None
        for i, segment in enumerate(result.segments):
            assert segment.id == i and segment.tokens and segment.text.startswith(" ")
            assert 0 <= segment.start < segment.end <= duration_s
            assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1
        assert result.segments[0].end <= result.segments[1].start
        text = result.text
    assert wer(TEXT, text) <= 0.15, text


def test_word_timestamps_lie_inside_their_segment(client: openai.OpenAI, speech_wav: Path, duration_s: float) -> None:
    result = client.audio.transcriptions.create(
        file=_upload(speech_wav),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.words and result.segments
    assert wer(TEXT, " ".join(w.word for w in result.words)) <= 0.15
    for word in result.words:
        assert 0 <= word.start <= word.end <= duration_s
        segment = next(s for s in result.segments if s.start - 1e-3 <= word.start <= s.end + 1e-3)
        assert word.end <= segment.end + 1e-3
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    only_words = client.audio.transcriptions.create(
        file=_upload(speech_wav),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert only_words.words and not only_words.segments


def test_stream_sends_deltas_then_done(client: openai.OpenAI, speech_wav: Path) -> None:
    events = list(client.audio.transcriptions.create(file=_upload(speech_wav), model="whisper-1", stream=True))
    kinds = [e.type for e in events]
    assert kinds == ["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert wer(TEXT, events[-1].text) <= 0.15


def test_prompt_temperature_language_and_served_model_id(client: openai.OpenAI, speech_wav: Path) -> None:
    result = client.audio.transcriptions.create(
        file=_upload(speech_wav),
        model="tiny.en",
        prompt="Stella, the store.",
        temperature=0.4,
        language="en",
    )
    assert wer(TEXT, result.text) <= 0.3, result.text


def test_translation_of_english_audio_is_its_transcript(client: openai.OpenAI, speech_wav: Path) -> None:
    result = client.audio.translations.create(file=_upload(speech_wav), model="whisper-1")
    assert wer(TEXT, result.text) <= 0.15


def test_curl_works_unchanged(live_server: Any, speech_wav: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [
            "curl",
            "-sS",
            f"{live_server.base_url}/v1/audio/transcriptions",
            "-F",
            f"file=@{speech_wav}",
            "-F",
            "model=whisper-1",
            "-F",
            "response_format=text",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert wer(TEXT, out) <= 0.15


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny.en", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
    assert client.models.retrieve("tiny.en").owned_by == "stream-server"
    assert client.models.retrieve("gpt-4o-transcribe").id == "gpt-4o-transcribe"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-unknown")
    assert info.value.code == "model_not_found"


def test_concurrent_uploads_share_batches(live_server: Any, tmp_path: Path) -> None:
    """Several multi-chunk uploads at once: their chunks meet in the same batches with previous-text prompts
    of different lengths, and every request still gets its own text back."""
    sentences = [FIRST, SECOND, "We will meet at the station at nine tomorrow morning.", "The quick brown fox jumps."]
    paths, texts = [], []
    for i in range(3):
        order = (sentences[i:] + sentences[:i]) * 2  # 8 chunks: the second 4 are prompted with the first 4
        parts = [np.concatenate([synthesize(s), silence(3.0)]) for s in order]
        paths.append(write_wav(tmp_path / f"multi-{i}.wav", np.concatenate(parts)))
        texts.append(" ".join(order))

    def post(path: Path) -> httpx.Response:
        return _post(live_server.base_url, files={"file": _upload(path)})

    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        responses = list(pool.map(post, paths))
    for response, text in zip(responses, texts, strict=True):
        assert response.status_code == 200, response.text
        assert wer(text, response.json()["text"]) <= 0.2, response.json()["text"]


# --- errors -----------------------------------------------------------------------------------------------


def _post(base_url: str, endpoint: str = "transcriptions", **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/audio/{endpoint}", timeout=120, **kwargs)


def test_error_cases(live_server: Any, speech_wav: Path, uploads: dict[str, Path]) -> None:
    url = live_server.base_url
    wav = speech_wav.read_bytes()
    _error(_post(url, data={"model": "whisper-1"}, files={"other": ("x.txt", b"x")}), 400, "file")
    _error(_post(url, data={"model": "whisper-1"}), 400, "file")  # not even multipart
    _error(_post(url, files={"file": ("a.wav", b"")}), 400, "file", "invalid_audio")
    garbage = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    _error(_post(url, files={"file": ("a.mp3", garbage)}), 400, "file", "invalid_audio")
    _error(_post(url, files={"file": ("notes.txt", b"hello\n" * 500)}), 400, "file", "unsupported_format")
    png = subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=red:s=16x16",
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    _error(_post(url, files={"file": ("photo.png", png)}), 400, "file", "unsupported_format")
    error = _error(_post(url, files={"file": ("a.wav", wav)}, data={"model": "gpt-9"}), 404, "model")
    assert error["code"] == "model_not_found"
    _error(_post(url, files={"file": ("a.wav", wav)}, data={"response_format": "xml"}), 400, "response_format")
    for bad in ("1.5", "-0.1", "hot", "nan"):
        _error(_post(url, files={"file": ("a.wav", wav)}, data={"temperature": bad}), 400, "temperature")
    _error(_post(url, files={"file": ("a.wav", wav)}, data={"language": "klingon"}), 400, "language")
    translation = _error(
        _post(url, "translations", files={"file": ("a.wav", wav)}, data={"language": "de"}), 400, "language"
    )
    assert "multilingual" in translation["message"]
    _error(
        _post(url, files={"file": ("a.wav", wav)}, data={"timestamp_granularities[]": "char"}),
        400,
        "timestamp_granularities",
    )
    # None of that disturbed the server.
    assert _post(url, files={"file": ("a.wav", wav)}).json()["text"]


def test_openai_client_raises_on_errors(client: openai.OpenAI, uploads: dict[str, Path]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=("a.wav", b""), model="whisper-1")
    assert info.value.code == "invalid_audio" and info.value.param == "file"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(file=_upload(uploads["wav"]), model="gpt-9")


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[str, Iterator[bytes]]:
    boundary = uuid.uuid4().hex
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'

    def body() -> Iterator[bytes]:  # a generator: httpx sends it chunked, without Content-Length
        yield head.encode()
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()


def test_upload_limits(server_factory: Callable[..., Any], speech_wav: Path, uploads: dict[str, Path]) -> None:
    big = np.random.default_rng(2).integers(-2000, 2000, 16000 * 40, dtype=np.int16)
    big_wav = speech_wav.with_name("big.wav")
    write_wav(big_wav, big.astype(np.float32) / 32768)
    assert big_wav.stat().st_size > 1_000_000
    with server_factory(max_upload_bytes=500_000, max_upload_duration_s=8) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:  # Content-Length says too much: refused up front
            client.audio.transcriptions.create(file=_upload(big_wav), model="whisper-1")
        assert info.value.status_code == 413 and info.value.code == "limit_exceeded"
        content_type, body = _multipart({"model": "whisper-1"}, "big.wav", big_wav.read_bytes())
        response = httpx.post(
            f"{server.base_url}/v1/audio/transcriptions",
            content=body,
            headers={"content-type": content_type},
            timeout=60,
        )
        _error(response, 413, "file", "limit_exceeded")  # counted while streaming in
        # Small file, long audio: refused while decoding (12 s of speech > 8 s).
        _error(_post(server.base_url, files={"file": _upload(uploads["mp3"])}), 413, "file", "limit_exceeded")
        short = write_wav(speech_wav.with_name("short.wav"), synthesize(FIRST))
        assert wer(FIRST, _post(server.base_url, files={"file": _upload(short)}).json()["text"]) <= 0.15


# --- long files -------------------------------------------------------------------------------------------


def test_long_chapter_wer_matches_faster_whisper(client: openai.OpenAI, shared_audio: Path) -> None:
    """The LibriSpeech chapter (224 s, 41 utterances): WER through the endpoint within 1 point of
    faster-whisper's ``WhisperModel.transcribe`` on the same file, both measured here."""
    from faster_whisper import WhisperModel

    from stream_server.config import embedded_model_path

    entries = manifest()
    chapter = next(e for e in entries if e["audio"] == "long_librispeech_test-clean_61-70970_chapter.wav")
    parts = sorted(
        (e for e in entries if e["group"] == chapter["group"] and e["kind"] != "long_derived"),
        key=lambda e: e["audio"],
    )
    reference = " ".join(e["text"] for e in parts)
    path = shared_audio / chapter["audio"]

    started = time.monotonic()
    result = client.audio.transcriptions.create(file=_upload(path), model="whisper-1", response_format="verbose_json")
    endpoint_s = time.monotonic() - started
    segments = result.segments or []
    assert all(a.end <= b.start + 1e-3 for a, b in zip(segments, segments[1:], strict=False))
    assert segments[-1].end <= chapter["duration_s"] + 0.05

    model = WhisperModel(embedded_model_path(), device="cpu", compute_type="int8")
    started = time.monotonic()
    fw_segments, _ = model.transcribe(str(path))
    fw_text = " ".join(s.text for s in fw_segments)
    fw_s = time.monotonic() - started

    endpoint_wer, fw_wer = wer(reference, result.text), wer(reference, fw_text)
    print(
        json.dumps(
            {
                "endpoint_wer": endpoint_wer,
                "faster_whisper_wer": fw_wer,
                "endpoint_s": round(endpoint_s, 1),
                "faster_whisper_s": round(fw_s, 1),
            }
        )
    )
    assert endpoint_wer <= fw_wer + 0.01
