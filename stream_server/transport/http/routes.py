"""OpenAI-compatible batch API routes: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

Thin on purpose: a route reads the multipart form (``uploads``), validates it (``form``), decodes the file in a
worker thread (``media``), hands the audio to ``offline`` (which feeds the shared decoder) and renders the result
(``formats``). Errors are ``StreamServerError``s, answered in OpenAI's shape by ``transport/errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect

from ...decode.types import Task
from ...errors import ModelNotFound, StreamServerError
from ...media import decode_audio
from ...offline import DecodeEngine as OfflineEngine
from ...offline import Transcript, transcribe_file, transcribe_segments, upload_decode_options
from ...session.segmenter import split_utterances
from ..errors import error_body
from ..models import is_served_model, served_models
from ..services import require_api_key, services
from . import formats
from .form import UploadRequest, parse_upload_form, resolve_task
from .uploads import read_form

log = logging.getLogger(__name__)
T = TypeVar("T")

# Chunks of one upload waiting in the engine at once: enough for a batch, few enough to leave room for
# streams and other uploads (see ``offline``).
UPLOAD_MAX_IN_FLIGHT = 4
_CREATED = int(time.time())
CLIENT_CLOSED = 499  # nginx's status for "client closed the request": logged and counted, never seen by anyone

router = APIRouter(dependencies=[Depends(require_api_key)])


def _served_models(request: Request) -> list[str]:
    return served_models(services(request).decoder.model_id)


def _count(request: Request, endpoint: str, status: int) -> None:
    services(request).metrics.http_requests.labels(endpoint, str(status)).inc()


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
    svc = services(request)
    settings, engine = svc.settings, svc.decoder
    endpoint = "transcriptions" if endpoint_task == "transcribe" else "translations"
    form: FormData | None = None
    try:
        form = await read_form(request, settings.max_upload_bytes)
        upload = parse_upload_form(form, engine.model_id, settings.max_upload_bytes)
        multilingual = engine.is_multilingual
        task = resolve_task(endpoint_task, upload.language, multilingual=multilingual, model_id=engine.model_id)
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
    split = functools.partial(
        split_utterances,
        max_utterance_s=settings.max_utterance_s,
        endpointing_ms=settings.endpointing_ms,
        aggressiveness=settings.vad_aggressiveness,
    )
    owner = f"http-{uuid.uuid4().hex[:12]}"
    # offline's engine protocol says cancel_owner returns None where the Decoder's returns a count
    uploads_engine = cast(OfflineEngine, engine)
    common: dict[str, Any] = {
        "owner": owner,
        "options": options,
        "split": split,
        "max_in_flight": UPLOAD_MAX_IN_FLIGHT,
    }
    if upload.stream:
        _count(request, endpoint, 200)
        segments = transcribe_segments(uploads_engine, audio, detect_language=language is None, **common)
        return StreamingResponse(
            _sse_events(segments),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        transcript = await _unless_disconnected(
            request,
            transcribe_file(uploads_engine, audio, default_language="en", detect_language=language is None, **common),
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
    if not is_served_model(model_id, services(request).decoder.model_id):
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return JSONResponse(_model_card(model_id))
