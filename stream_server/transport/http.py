"""OpenAI-compatible batch API: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

Thin on purpose: a route reads the multipart form (counting bytes as they arrive, so an oversized upload is
refused without being stored), validates the fields into an ``UploadRequest``, decodes the file in a worker
thread (``media``), hands the audio to ``offline`` (which feeds the shared engine) and renders the result
(``formats``). Errors are ``StreamServerError``s; ``error_response`` turns them into OpenAI's
``{"error": {"message", "type", "param", "code"}}`` in the one exception handler ``app.py`` registers.

The form is parsed by hand rather than with FastAPI's ``File()``/``Form()`` parameters because those read
the whole body before the route runs: no size limit while streaming, and validation errors in FastAPI's
shape instead of OpenAI's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..auth import require_api_key
from ..decode.types import Task
from ..errors import InvalidParameter, LimitExceeded, ModelNotFound, StreamServerError, Unauthorized
from ..media import decode_audio
from ..offline import Transcript, transcribe_file, transcribe_segments, upload_decode_options
from ..session.segmenter import split_utterances
from . import formats
from .formats import RESPONSE_FORMATS, ResponseFormat, TimestampGranularity

log = logging.getLogger(__name__)
T = TypeVar("T")

OPENAI_MODEL_ALIAS = "whisper-1"
# Room for the form's other fields and multipart framing on top of ``max_upload_bytes`` of file.
FORM_OVERHEAD_BYTES = 64 * 1024
# After refusing a body as too large we read (and drop) up to this much more of it, so that an ordinary
# client, which sends the whole body before reading the answer, sees the 413 instead of a broken pipe.
DRAIN_MAX_BYTES = 32 * 1024 * 1024
DRAIN_MAX_S = 10.0
# Chunks of one upload waiting in the engine at once: enough for a batch, few enough to leave room for
# streams and other uploads (see ``offline``).
UPLOAD_MAX_IN_FLIGHT = 4
_CREATED = int(time.time())
CLIENT_CLOSED = 499  # nginx's status for "client closed the request": logged and counted, never seen by anyone


router = APIRouter(dependencies=[Depends(require_api_key)])


# --- errors in OpenAI's shape ------------------------------------------------------------------------------


def error_body(exc: StreamServerError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


def error_response(exc: StreamServerError) -> JSONResponse:
    """The HTTP answer for any of our errors (``app.py`` registers it for ``StreamServerError``)."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status in (429, 503):
        headers["Retry-After"] = "1"
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation errors (query/path/body parameters), reshaped like OpenAI's 400s."""
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    code = "missing_parameter" if first.get("type") == "missing" else "invalid_parameter"
    body = {
        "error": {
            "message": f"{param}: {message}" if param else message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=400)


# --- reading and validating the form -----------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


async def _counted_body(request: Request, limit_bytes: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit_bytes:
            raise _BodyTooLarge
        yield chunk


async def _drain_body(request: Request) -> None:
    """Read and drop the rest of a refused body (bounded in bytes and time)."""
    if request.headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for our answer before sending: nothing to drain

    async def drain() -> None:
        budget = DRAIN_MAX_BYTES
        while budget > 0:
            message = await request.receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), DRAIN_MAX_S)


def _too_large(max_upload_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"The uploaded file is larger than the limit of {max_upload_bytes} bytes ({max_upload_bytes / 2**20:.1f} MiB).",
        param="file",
    )


async def read_form(request: Request, max_upload_bytes: int) -> FormData:
    """The multipart form, with the file spooled to a temporary file (memory up to 1 MiB, then disk)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidParameter(
            "The request must be multipart/form-data with the audio in a 'file' field.", param="file"
        )
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await _drain_body(request)
        raise _too_large(max_upload_bytes)
    parser = MultiPartParser(request.headers, _counted_body(request, limit), max_files=1, max_fields=64)
    try:
        return await parser.parse()
    except _BodyTooLarge:
        await _drain_body(request)
        raise _too_large(max_upload_bytes) from None
    except MultiPartException as exc:
        raise InvalidParameter(f"Could not parse the multipart form: {exc.message}", param="file") from exc


@dataclass(frozen=True)
class UploadRequest:
    """The validated form of one transcription or translation request."""

    file: UploadFile
    model: str
    prompt: str | None
    response_format: ResponseFormat
    temperature: float
    language: str | None
    languages: tuple[str, ...]  # our extension: detection limited to these codes (comma-separated field)
    granularities: tuple[TimestampGranularity, ...]
    stream: bool


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"'{name}' must be a text field, not a file.", param=name)
    return value.strip()


def _parse_language(value: str | None, param: str = "language") -> str | None:
    if not value:
        return None
    code = value.lower()
    if code in formats.LANGUAGE_NAMES:
        return code
    by_name = {name: c for c, name in formats.LANGUAGE_NAMES.items()}
    if code in by_name:
        return by_name[code]
    raise InvalidParameter(f"Unsupported language '{value}': use an ISO-639-1 code such as 'en'.", param=param)


def _parse_languages(value: str | None) -> tuple[str, ...]:
    codes = (_parse_language(part.strip(), "languages") for part in (value or "").split(","))
    return tuple(dict.fromkeys(code for code in codes if code))


def _parse_temperature(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        temperature = math.nan
    if not 0.0 <= temperature <= 1.0:  # also refuses NaN
        raise InvalidParameter(f"'temperature' must be a number between 0 and 1, got '{value}'.", param="temperature")
    return temperature


def parse_upload_form(form: FormData, served_models: frozenset[str], max_upload_bytes: int) -> UploadRequest:
    file = form.get("file")
    if file is None:
        raise InvalidParameter("No file was uploaded: send the audio in the 'file' form field.", param="file")
    if not isinstance(file, UploadFile):
        raise InvalidParameter("'file' must be a file upload (multipart file part), not a text field.", param="file")
    if file.size is not None and file.size > max_upload_bytes:
        raise _too_large(max_upload_bytes)
    model = _text_field(form, "model") or OPENAI_MODEL_ALIAS
    if model not in served_models:
        raise ModelNotFound(
            f"The model '{model}' does not exist here; served: {', '.join(sorted(served_models))}.",
            param="model",
        )
    response_format = _text_field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidParameter(
            f"Unsupported response_format '{response_format}': use one of {', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
        )
    raw_granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    granularities: list[TimestampGranularity] = []
    for value in raw_granularities:
        if value not in ("segment", "word"):
            raise InvalidParameter(
                f"Unsupported timestamp granularity '{value}': use 'segment' or 'word'.",
                param="timestamp_granularities",
            )
        granularities.append(cast(TimestampGranularity, value))
    stream = (_text_field(form, "stream") or "false").lower()
    if stream not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"'stream' must be true or false, got '{stream}'.", param="stream")
    return UploadRequest(
        file=file,
        model=model,
        prompt=_text_field(form, "prompt") or None,
        response_format=cast(ResponseFormat, response_format),
        temperature=_parse_temperature(_text_field(form, "temperature")),
        language=_parse_language(_text_field(form, "language")),
        languages=_parse_languages(_text_field(form, "languages")),
        granularities=tuple(dict.fromkeys(granularities)) or ("segment",),
        stream=stream in ("true", "1"),
    )


def resolve_task(endpoint_task: Task, language: str | None, *, multilingual: bool, model_id: str) -> Task:
    """What the model is asked to do. An English-only model can only transcribe English: that is also the
    correct *translation* of English audio, and anything else gets a clear refusal."""
    if multilingual:
        return endpoint_task
    if language not in (None, "en"):
        name = formats.LANGUAGE_NAMES.get(language or "", language)
        need = "Translation" if endpoint_task == "translate" else "Transcription"
        raise InvalidParameter(
            f"{need} of {name} audio needs a multilingual model; the served model '{model_id}' is "
            "English-only. Start the server with a multilingual model (for example --model small).",
            param="language",
        )
    return "transcribe"


# --- the routes --------------------------------------------------------------------------------------------


def _served_models(request: Request) -> list[str]:
    engine = request.app.state.engine
    return list(dict.fromkeys([engine.backend.model_id, OPENAI_MODEL_ALIAS]))


def _count(request: Request, endpoint: str, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.http_requests.labels(endpoint, str(status)).inc()


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run ``work``; cancel it (and so the request's queued decode jobs) if the client hangs up first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _sse_events(segments: AsyncIterator[Any]) -> AsyncIterator[str]:
    """OpenAI's streaming transcription events: one ``transcript.text.delta`` per decoded chunk, then
    ``transcript.text.done``; an error after the stream has started is sent as an event with ``error``."""
    texts: list[str] = []
    try:
        async for segment in segments:
            text = segment.text.strip()
            delta = (" " if texts else "") + text
            texts.append(text)
            yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n"
        done = {"type": "transcript.text.done", "text": " ".join(texts)}
        yield f"data: {json.dumps(done)}\n\n"
    except StreamServerError as exc:
        yield f"data: {json.dumps({'type': 'error', **error_body(exc)})}\n\n"
    finally:
        await segments.aclose()  # type: ignore[attr-defined]


async def _handle_upload(request: Request, endpoint_task: Task) -> Response:
    state = request.app.state
    settings, engine = state.settings, state.engine
    endpoint = "transcriptions" if endpoint_task == "transcribe" else "translations"
    form: FormData | None = None
    try:
        form = await read_form(request, settings.max_upload_bytes)
        served = frozenset(_served_models(request))
        upload = parse_upload_form(form, served, settings.max_upload_bytes)
        multilingual = bool(engine.backend.is_multilingual)
        task = resolve_task(endpoint_task, upload.language, multilingual=multilingual, model_id=engine.backend.model_id)
        if not multilingual and set(upload.languages) - {"en"}:
            raise InvalidParameter(
                "languages needs a multilingual model; the served one is English-only.", param="languages"
            )
        language = upload.language or (None if multilingual else "en")
        audio = await asyncio.to_thread(
            decode_audio,
            upload.file.file,
            filename=upload.file.filename,
            max_duration_s=settings.max_upload_duration_s,
        )
    except StreamServerError as exc:
        _count(request, endpoint, exc.http_status)
        raise
    except ClientDisconnect:
        log.info("%s: client disconnected during the upload", endpoint)
        _count(request, endpoint, CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)
    finally:
        if form is not None:
            await form.close()

    want_words = "word" in upload.granularities or upload.response_format in ("srt", "vtt")
    options = upload_decode_options(
        temperature=upload.temperature,
        final_beam_size=settings.upload_beam_size,
        task=task,
        language=language,
        prompt=upload.prompt,
        word_timestamps=want_words,
    )
    options = dataclasses.replace(options, languages=upload.languages)
    split = functools.partial(
        split_utterances,
        max_utterance_s=settings.max_utterance_s,
        endpointing_ms=settings.endpointing_ms,
        aggressiveness=settings.vad_aggressiveness,
    )
    owner = f"http-{uuid.uuid4().hex[:12]}"
    common: dict[str, Any] = {
        "owner": owner,
        "options": options,
        "split": split,
        "max_in_flight": UPLOAD_MAX_IN_FLIGHT,
    }
    if upload.stream:
        _count(request, endpoint, 200)
        segments = transcribe_segments(engine, audio, detect_language=language is None, **common)
        return StreamingResponse(
            _sse_events(segments),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        transcript = await _unless_disconnected(
            request,
            transcribe_file(engine, audio, default_language="en", detect_language=language is None, **common),
        )
    except StreamServerError as exc:  # the request's queued jobs are already cancelled (``offline``)
        _count(request, endpoint, exc.http_status)
        raise
    if transcript is None:
        log.info("%s: client disconnected, decode jobs of %s cancelled", endpoint, owner)
        _count(request, endpoint, CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)
    if endpoint_task == "translate":
        transcript = dataclasses.replace(transcript, task="translate")
    _count(request, endpoint, 200)
    return _render(transcript, upload)


def _render(transcript: Transcript, upload: UploadRequest) -> Response:
    body = formats.render(transcript, upload.response_format, upload.granularities)
    media_type = formats.MEDIA_TYPES[upload.response_format]
    if isinstance(body, dict):
        return JSONResponse(body, media_type=media_type)
    return Response(body, media_type=media_type)


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    """Transcribe an uploaded audio file (OpenAI ``audio.transcriptions.create``)."""
    return await _handle_upload(request, "transcribe")


@router.post("/v1/audio/translations")
async def create_translation(request: Request) -> Response:
    """Translate an uploaded audio file into English (OpenAI ``audio.translations.create``)."""
    return await _handle_upload(request, "translate")


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "stream-server"}


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [_model_card(m) for m in _served_models(request)]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> JSONResponse:
    if model_id not in _served_models(request):
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return JSONResponse(_model_card(model_id))
