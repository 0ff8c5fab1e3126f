"""Undecodable requests are the caller's error: INVALID_ARGUMENT, not INTERNAL.

grpcio answers a request its deserializer cannot parse with INTERNAL
("Exception deserializing request!"), which tells the caller the driver is
broken. Protobuf refuses to parse malformed bytes and string fields holding
invalid UTF-8 (proto3 strings must be UTF-8), and both are faults of the
request. ``RejectUndecodable`` wraps every unary handler's deserializer so a
parse failure reaches the handler as a marker, and answers it with
INVALID_ARGUMENT before any servicer code runs.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger("csi_driver.server")


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RejectUndecodable(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        decode, behaviour = handler.request_deserializer, handler.unary_unary

        def tolerant_decode(raw: bytes):
            try:
                return decode(raw)
            except Exception as err:  # protobuf's DecodeError, whatever the implementation
                return _Undecodable(str(err))

        def checked(request, context):
            if isinstance(request, _Undecodable):
                message = (f"{method}: the request cannot be decoded ({request.reason}); it is "
                           "not valid protobuf for this call, or a string field holds bytes that "
                           "are not valid UTF-8 (CSI strings must be UTF-8)")
                log.warning(message, extra={"method": method,
                                            "outcome": grpc.StatusCode.INVALID_ARGUMENT.name})
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=tolerant_decode,
            response_serializer=handler.response_serializer)
