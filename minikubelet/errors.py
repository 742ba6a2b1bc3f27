"""The small error taxonomy every layer speaks.

A runtime answers with a gRPC status code; the CRI client turns it into one of
these, and the CRI servers turn these back into status codes. Nothing above the
client ever looks at a gRPC code.
"""

from __future__ import annotations


class MinikubeletError(Exception):
    """Base of every error minikubelet raises on purpose."""


class CRIError(MinikubeletError):
    """A CRI call failed. ``code`` is the gRPC status code name (e.g. ``NOT_FOUND``)."""

    code: str = "UNKNOWN"

    def __init__(self, message: str, *, method: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self.message} ({self.code})"


class NotFound(CRIError):
    code = "NOT_FOUND"


class AlreadyExists(CRIError):
    code = "ALREADY_EXISTS"


class InvalidArgument(CRIError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(CRIError):
    code = "FAILED_PRECONDITION"


class Unavailable(CRIError):
    code = "UNAVAILABLE"


class DeadlineExceeded(CRIError):
    code = "DEADLINE_EXCEEDED"


class Unimplemented(CRIError):
    code = "UNIMPLEMENTED"


class PermissionDenied(CRIError):
    code = "PERMISSION_DENIED"


class Internal(CRIError):
    code = "INTERNAL"


class RuntimeVersionMismatch(MinikubeletError):
    """The endpoint answered, but not with the runtime.v1 API the kubelet speaks."""


ERRORS_BY_CODE: dict[str, type[CRIError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        PermissionDenied,
        Internal,
    )
}


def error_for_code(code: str, message: str, *, method: str = "") -> CRIError:
    """The taxonomy error for a gRPC status code name; unknown codes become CRIError."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        err = CRIError(message, method=method)
        err.code = code
        return err
    return cls(message, method=method)
