"""Thin transports: websocket protocol v1 and the OpenAI-compatible HTTP API."""
