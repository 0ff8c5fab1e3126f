"""The one exception every registry failure becomes."""

from __future__ import annotations

import grpc

from csi_driver.errors import RequestError


class RegistryError(RequestError):
    """A pull that failed, with the gRPC status the kubelet should see.

    UNAVAILABLE: unreachable, 5xx, 429 or out of time (the kubelet retries);
    NOT_FOUND: unknown repository, tag or digest; PERMISSION_DENIED: access or
    credentials refused; FAILED_PRECONDITION: nothing usable for this platform,
    or an answer this client cannot use; DATA_LOSS: content that does not match
    its digest or size, or stops early; RESOURCE_EXHAUSTED: over a size limit.
    The message names the image reference and is shown verbatim in pod events.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.message
