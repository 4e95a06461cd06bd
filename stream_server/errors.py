"""One tree of errors, each saying whose fault it is and how a transport reports it.

Transports map these in one place: a websocket sends ``{"type": "error", "code", "message"}`` (and closes
with ``close_code`` when ``fatal``); HTTP answers OpenAI's ``{"error": {...}}`` shape with ``http_status``.
"""

from __future__ import annotations


class StreamServerError(Exception):
    """Base class. ``code`` is a stable machine-readable string clients may switch on."""

    code = "internal_error"
    http_status = 500
    error_type = "server_error"
    close_code = 1011
    fatal = True
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param


class ClientError(StreamServerError):
    """The client sent something we cannot accept."""

    code = "invalid_request"
    http_status = 400
    error_type = "invalid_request_error"
    close_code = 1008
    fatal = False


class InvalidParameter(ClientError):
    code = "invalid_parameter"
    fatal = True


class ProtocolError(ClientError):
    """A websocket message that breaks protocol v1 (bad JSON, unknown type). The session goes on."""

    code = "protocol_error"


class AudioFormatError(ClientError):
    code = "invalid_audio"


class UnsupportedFormat(ClientError):
    code = "unsupported_format"


class ModelNotFound(ClientError):
    code = "model_not_found"
    http_status = 404


class Unauthorized(ClientError):
    code = "invalid_api_key"
    http_status = 401
    error_type = "authentication_error"
    fatal = True


class OriginNotAllowed(ClientError):
    """A browser page from another origin tried to open a session (``--allowed-origins``)."""

    code = "origin_not_allowed"
    http_status = 403
    error_type = "permission_error"
    fatal = True


class LimitExceeded(ClientError):
    code = "limit_exceeded"
    http_status = 413
    close_code = 1009
    fatal = True


class TooManySessions(LimitExceeded):
    code = "too_many_sessions"
    http_status = 429
    close_code = 1013


class BacklogFull(LimitExceeded):
    code = "backlog_full"
    http_status = 429
    close_code = 1013
    fatal = False


class MessageTooLarge(LimitExceeded):
    """A websocket message over ``max_message_bytes``: dropped and reported; the session goes on.
    (Over twice the limit the websocket layer itself closes the connection with 1009.)"""

    code = "message_too_large"
    fatal = False


class IdleTimeout(LimitExceeded):
    """No audio and no keepalive for ``idle_timeout_s``: the session is flushed and closed."""

    code = "idle_timeout"
    http_status = 408
    close_code = 1000


class SessionTooLong(LimitExceeded):
    """The session reached ``max_session_s``: flushed (finals delivered) and closed."""

    code = "max_session_duration"
    close_code = 1000


class SlowConsumer(LimitExceeded):
    """The client stopped reading: too many events are waiting for the socket. The session is closed
    (whatever the client does, memory per session stays bounded)."""

    code = "slow_consumer"
    close_code = 1008


class ServerError(StreamServerError):
    """Our fault; the client may retry."""


class Overloaded(ServerError):
    code = "overloaded"
    http_status = 503
    close_code = 1013


class DecodeFailed(ServerError):
    code = "decode_failed"


class ShuttingDown(ServerError):
    code = "server_shutdown"
    http_status = 503
    close_code = 1001
