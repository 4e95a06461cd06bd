"""Which model names a client may ask for: the served model's id, the names OpenAI clients send by default, and
any other ``*transcribe*`` name. All of them mean the one served model."""

from __future__ import annotations

MODEL_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")


def is_served_model(name: str, model_id: str) -> bool:
    return name == model_id or name in MODEL_ALIASES or "transcribe" in name


def served_models(model_id: str) -> list[str]:
    """The names ``/v1/models`` lists."""
    return list(dict.fromkeys([model_id, *MODEL_ALIASES]))
