"""Reading a multipart upload as it streams in: bytes are counted as they arrive, so an oversized upload is refused
(413) without being stored, and the rest of a refused body is drained (bounded) so that an ordinary client sees the
answer instead of a broken pipe.

The form is parsed by hand rather than with FastAPI's ``File()``/``Form()`` parameters because those read the whole
body before the route runs: no size limit while streaming, and validation errors in FastAPI's shape instead of
OpenAI's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ...errors import InvalidParameter, LimitExceeded

# Room for the form's other fields and multipart framing on top of ``max_upload_bytes`` of file.
FORM_OVERHEAD_BYTES = 64 * 1024
# After refusing a body as too large we read (and drop) up to this much more of it.
DRAIN_MAX_BYTES = 32 * 1024 * 1024
DRAIN_MAX_S = 10.0
MAX_FILENAME_CHARS = 1024


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


def too_large(max_upload_bytes: int) -> LimitExceeded:
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
        raise too_large(max_upload_bytes)
    parser = MultiPartParser(request.headers, _counted_body(request, limit), max_files=1, max_fields=64)
    try:
        return await parser.parse()
    except _BodyTooLarge:
        await _drain_body(request)
        raise too_large(max_upload_bytes) from None
    except MultiPartException as exc:
        if "header size" in str(exc.__cause__):  # python-multipart's cap on one part header line (4 KiB)
            raise InvalidParameter(
                "A part header of the multipart form is too long: the file name is limited to "
                f"{MAX_FILENAME_CHARS} characters.",
                param="file",
            ) from exc
        raise InvalidParameter(f"Could not parse the multipart form: {exc.message}", param="file") from exc
