"""The project's exception types; ``api/errors.py`` maps each to one HTTP status."""

from __future__ import annotations


class MvmChatError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    title = "Internal Server Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(MvmChatError):
    """The configuration is invalid; ``key`` names the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class BadRequest(MvmChatError):
    """The request cannot be parsed."""

    status_code = 400
    title = "Bad Request"


class Unauthorized(MvmChatError):
    """No key, or a key that is not known or revoked."""

    status_code = 401
    title = "Unauthorized"


class Forbidden(MvmChatError):
    """A valid key whose role may not use this route."""

    status_code = 403
    title = "Forbidden"


class NotFound(MvmChatError):
    """The object does not exist, or belongs to another tenant."""

    status_code = 404
    title = "Not Found"


class Conflict(MvmChatError):
    """The request conflicts with the state of the target."""

    status_code = 409
    title = "Conflict"


class InvalidInput(MvmChatError):
    """The request parsed but a field is invalid; ``field`` names it."""

    status_code = 422
    title = "Unprocessable Entity"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class TooManyRequests(MvmChatError):
    """A key went over one of its limits; retry after ``retry_after`` seconds."""

    status_code = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class EngineError(MvmChatError):
    """A model engine failed to produce an answer."""

    status_code = 502
    title = "Bad Gateway"


class ServiceUnavailable(MvmChatError):
    """A dependency (database, engine) is unavailable; retry later."""

    status_code = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DatabaseNotMigrated(MvmChatError):
    """The configured database has not been migrated to the current schema."""
