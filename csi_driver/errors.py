"""A request failure carrying the gRPC status the caller should see."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """Raised anywhere below the gRPC layer; the servicer turns it into a status."""

    def __init__(self, code: grpc.StatusCode, message: str, unsupported: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        # No volume family claims the request: counted as 'unsupported', not 'failed'.
        self.unsupported = unsupported


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def unsupported(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message, unsupported=True)


def precondition(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.FAILED_PRECONDITION, message)


def not_found(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.ALREADY_EXISTS, message)


def aborted(message: str) -> RequestError:
    """Something else changed the target while this call worked on it; a retry may succeed."""
    return RequestError(grpc.StatusCode.ABORTED, message)


def internal(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INTERNAL, message)


def unimplemented(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.UNIMPLEMENTED, message)
