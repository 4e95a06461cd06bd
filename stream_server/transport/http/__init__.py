"""The OpenAI-compatible batch API: ``routes`` (thin), ``form`` (validation), ``uploads`` (the streaming multipart
reader) and ``formats`` (response renderings)."""

from __future__ import annotations

from .routes import router

__all__ = ["router"]
