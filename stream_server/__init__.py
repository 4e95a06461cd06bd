"""Real-time streaming speech-to-text service with a batched Whisper core."""

__version__ = "0.1.0"
