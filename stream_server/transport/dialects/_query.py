"""Small parsers shared by the vendor dialects: query values, booleans, BCP-47 languages, key terms as a prompt.

Each raises ``InvalidParameter`` naming the parameter, so a refusal says exactly what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import InvalidParameter, ProtocolError

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_CHANNELS = 8


def last(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The last value of a query parameter (a repeated scalar: the last one wins, as in most servers)."""
    values = query.get(name)
    return values[-1] if values else None


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidParameter(f"{name} must be true or false, got {value!r}", param=name)


def parse_int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, got {value!r}", param=name) from None
    if not low <= number <= high:
        raise InvalidParameter(f"{name} must be within {low}..{high}, got {number}", param=name)
    return number


def base_language(tag: str | None, name: str = "language") -> str | None:
    """BCP-47 (``en-US``, ``pt_BR``, ``zh-Hans``) -> Whisper's ISO-639 code (``en``); ``multi``/``auto``/empty
    -> None (detect per utterance)."""
    if tag is None:
        return None
    tag = tag.strip()
    if tag.lower() in ("", "multi", "auto"):
        return None
    base = tag.replace("_", "-").split("-", 1)[0].lower()
    if not (2 <= len(base) <= 3 and base.isascii() and base.isalpha()):
        raise InvalidParameter(f"{name} must be a BCP-47 language tag such as en or en-US, got {tag!r}", param=name)
    return base


def glossary_prompt(base_prompt: str, terms: Sequence[str]) -> str:
    """Key terms folded into Whisper's prompt: a hint to spell these names, not a boost."""
    cleaned = [t.strip() for t in terms if t.strip()]
    if not cleaned:
        return base_prompt
    glossary = "Glossary: " + ", ".join(dict.fromkeys(cleaned)) + "."
    return f"{base_prompt} {glossary}".strip()


def json_object(text: str, kind_field: str) -> dict[str, Any]:
    """A client's text frame as a JSON object; ``ProtocolError`` saying what is wrong with it otherwise
    (``kind_field``: the member that names the message, ``type`` or ``event``)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # also nesting too deep, or a number of thousands of digits
        raise ProtocolError("message is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object with a '{kind_field}'")
    return message
