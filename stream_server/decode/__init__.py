"""Decoding: job types, the batching scheduler, its asyncio driver, and the Whisper backend."""
