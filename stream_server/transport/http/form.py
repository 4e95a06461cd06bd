"""The fields of a transcription or translation request, validated into an ``UploadRequest`` (errors are
``InvalidParameter`` / ``ModelNotFound``, shaped like OpenAI's by ``transport/errors.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

from starlette.datastructures import FormData, UploadFile

from ...decode.types import Task
from ...errors import InvalidParameter, ModelNotFound
from ..languages import LANGUAGE_NAMES, language_code
from ..models import MODEL_ALIASES, is_served_model
from .formats import RESPONSE_FORMATS, ResponseFormat, TimestampGranularity
from .uploads import MAX_FILENAME_CHARS, too_large


@dataclass(frozen=True)
class UploadRequest:
    """The validated form of one transcription or translation request."""

    file: UploadFile
    model: str
    prompt: str | None
    response_format: ResponseFormat
    temperature: float
    language: str | None
    granularities: tuple[TimestampGranularity, ...]
    stream: bool


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"'{name}' must be a text field, not a file.", param=name)
    return value.strip()


def _parse_language(value: str | None) -> str | None:
    try:
        return language_code(value)
    except ValueError:
        raise InvalidParameter(
            f"Unsupported language '{value}': use an ISO-639-1 code such as 'en'.", param="language"
        ) from None


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


def parse_upload_form(form: FormData, model_id: str, max_upload_bytes: int) -> UploadRequest:
    file = form.get("file")
    if file is None:
        raise InvalidParameter("No file was uploaded: send the audio in the 'file' form field.", param="file")
    if not isinstance(file, UploadFile):
        raise InvalidParameter("'file' must be a file upload (multipart file part), not a text field.", param="file")
    if file.size is not None and file.size > max_upload_bytes:
        raise too_large(max_upload_bytes)
    if file.filename is not None and len(file.filename) > MAX_FILENAME_CHARS:
        raise InvalidParameter(
            f"The file name is {len(file.filename)} characters long; at most {MAX_FILENAME_CHARS} are accepted.",
            param="file",
        )
    model = _text_field(form, "model") or MODEL_ALIASES[0]
    if not is_served_model(model, model_id):
        served = ", ".join([model_id, *MODEL_ALIASES])
        raise ModelNotFound(f"The model '{model}' does not exist here; served: {served}.", param="model")
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
        granularities=tuple(dict.fromkeys(granularities)) or ("segment",),
        stream=stream in ("true", "1"),
    )


def resolve_task(endpoint_task: Task, language: str | None, *, multilingual: bool, model_id: str) -> Task:
    """What the model is asked to do. An English-only model can only transcribe English: that is also the
    correct *translation* of English audio, and anything else gets a clear refusal."""
    if multilingual:
        return endpoint_task
    if language not in (None, "en"):
        name = LANGUAGE_NAMES.get(language or "", language)
        need = "Translation" if endpoint_task == "translate" else "Transcription"
        raise InvalidParameter(
            f"{need} of {name} audio needs a multilingual model; the served model '{model_id}' is "
            "English-only. Start the server with a multilingual model (for example --model small).",
            param="language",
        )
    return "transcribe"
