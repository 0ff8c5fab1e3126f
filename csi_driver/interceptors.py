"""What every CSI call goes through, wrapped around each method once, when its
service is added to the server.

Layers, outermost first:

- ``Admission`` lets a few calls run at once (``admission.Pool.run``); a call
  that blocks on something slow gives its turn back (``admission.waiting``).
- ``Outcomes`` turns whatever the handler returns or raises into the call's
  gRPC status, its one JSON log line and its metrics observation. Handlers
  just raise ``RequestError`` (or let a bug raise anything else: INTERNAL,
  logged with its traceback) and describe the call through ``current()``.
- ``RejectUndecodable`` answers a request that protobuf cannot parse with
  INVALID_ARGUMENT instead of grpcio's INTERNAL ("Exception deserializing
  request!"), which would tell the caller the driver is broken. Malformed bytes
  and string fields holding invalid UTF-8 (proto3 strings must be UTF-8) are
  faults of the request.

``register`` hands a generated ``add_*Servicer_to_server`` a stand-in for the
server that wraps each method handler in these layers before passing it on, so
no interceptor pipeline runs per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from csi_driver.admission import Pool
from csi_driver.errors import RequestError, invalid
from csi_driver.metrics import FAILED, SUCCESS, UNSUPPORTED, Metrics
from csi_driver.volumes import INVALID_TYPE

log = logging.getLogger("csi_driver.calls")
Behaviour = Callable[[Any, grpc.ServicerContext], Any]
Deserializer = Callable[[bytes], Any]


class Layer:
    """One wrapper around unary-unary methods; the defaults leave a method as it is."""

    def wrap_behaviour(self, method: str, behaviour: Behaviour) -> Behaviour:
        return behaviour

    def wrap_deserializer(self, method: str, deserialize: Deserializer) -> Deserializer:
        return deserialize


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only


def wrap_handler(method: str, handler: Handler, layers: Sequence[Layer]) -> Handler:
    """``handler`` with ``layers`` around it, the first one outermost."""
    behaviour, deserialize = handler.unary_unary, handler.request_deserializer
    if behaviour is None or deserialize is None:
        raise TypeError(f"{method}: only unary-unary methods with a request type are wrapped")
    for layer in reversed(layers):
        behaviour = layer.wrap_behaviour(method, behaviour)
        deserialize = layer.wrap_deserializer(method, deserialize)
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=deserialize,
        response_serializer=handler.response_serializer)


class _Registrar:
    """Stands in for the server while a generated ``add_*_to_server`` runs."""

    def __init__(self, server: grpc.Server, layers: Sequence[Layer]) -> None:
        self._server, self._layers = server, layers
        self.registered = False

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # built from the same method handlers, wrapped, below

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, Handler]) -> None:
        wrapped = {name: wrap_handler(f"/{service}/{name}", handler, self._layers)
                   for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),))
        # grpcio >= 1.62 has it; typeshed's grpc stubs do not list it yet.
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]
        self.registered = True


def register(server: grpc.Server, add_to_server: Callable[[Any, Any], None], servicer: object,
             layers: Sequence[Layer]) -> None:
    """Add ``servicer`` to ``server`` through its generated ``add_to_server``, each
    method wrapped in ``layers``."""
    registrar = _Registrar(server, layers)
    add_to_server(servicer, registrar)
    if not registrar.registered:
        raise RuntimeError("the generated service code did not hand over its method handlers; "
                           "the grpcio-tools version changed how services are added")


# ---------------------------------------------------------------- Admission

class Admission(Layer):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def wrap_behaviour(self, method: str, behaviour: Behaviour) -> Behaviour:
        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            return self._pool.run(behaviour, request, context)

        return admitted


# ----------------------------------------------------------------- Outcomes

@dataclass
class Call:
    """What a handler tells the outcome layer about the call it is serving."""

    method: str
    message: str = ""  # the success log line's message, when not the method's default
    volume_type: str = ""  # the metrics and log ``type``
    host_path: str = ""  # the metrics ``path``: the host path that was mounted


_CURRENT: ContextVar[Call] = ContextVar("csi_call")
# Calls that change the node log at info; queries (probes, stats, capabilities,
# asked every few seconds by the kubelet and health checks) at debug.
_CHANGES = {"NodePublishVolume": "published", "NodeUnpublishVolume": "unpublished"}
_LOGGED_LIMITS = {"volume_id": 256, "target_path": 4096}


def current() -> Call:
    """The call being served on this thread (a detached record outside a call)."""
    try:
        return _CURRENT.get()
    except LookupError:
        return Call("")


class Outcomes(Layer):
    def __init__(self, metrics: Metrics) -> None:
        self._observe: dict[str, Callable[[Call, str, float], None]] = {
            "NodePublishVolume": lambda call, status, seconds: metrics.publish(
                call.volume_type or INVALID_TYPE, call.host_path, status, seconds),
            "NodeUnpublishVolume": lambda call, status, seconds: metrics.unpublish(status, seconds),
        }

    def wrap_behaviour(self, method: str, behaviour: Behaviour) -> Behaviour:
        name = method.rsplit("/", 1)[-1]
        observe = self._observe.get(name)
        success_level = logging.INFO if name in _CHANGES else logging.DEBUG
        default_message = _CHANGES.get(name, "ok")

        def outcome(request: Any, context: grpc.ServicerContext) -> Any:
            call = Call(name)
            token = _CURRENT.set(call)
            started = time.perf_counter()
            response, code, status = None, grpc.StatusCode.OK, SUCCESS
            try:
                response = behaviour(request, context)
                message = call.message or default_message
            except RequestError as err:
                code, message = err.code, err.message
                status = UNSUPPORTED if err.unsupported else FAILED
            except Exception as err:
                code, message, status = grpc.StatusCode.INTERNAL, f"unexpected error: {err}", FAILED
                log.error(f"{name} failed unexpectedly", exc_info=True)
            finally:
                _CURRENT.reset(token)
            elapsed = time.perf_counter() - started
            if observe is not None:
                observe(call, status, elapsed)
            ok = code == grpc.StatusCode.OK
            log.log(success_level if ok else logging.WARNING, f"{name}: {message}",
                    extra=_log_fields(name, request, call, code, elapsed))
            if not ok:
                context.abort(code, message)
            return response

        return outcome


def _log_fields(method: str, request: Any, call: Call, code: grpc.StatusCode,
                elapsed: float) -> dict[str, object]:
    fields: dict[str, object] = {"method": method}
    for name, limit in _LOGGED_LIMITS.items():
        value = getattr(request, name, None)
        if name == "target_path" and value is None:
            value = getattr(request, "volume_path", None)  # NodeGetVolumeStats names it so
        if isinstance(value, str):
            fields[name] = value[:limit]
    if call.volume_type:
        fields["type"] = call.volume_type
    if method == "NodePublishVolume" and hasattr(request, "readonly"):
        fields["readonly"] = request.readonly
    fields["outcome"] = code.name
    fields["duration_ms"] = round(elapsed * 1000, 3)
    return fields


# -------------------------------------------------------- RejectUndecodable

class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RejectUndecodable(Layer):
    def wrap_deserializer(self, method: str, deserialize: Deserializer) -> Deserializer:
        def tolerant(raw: bytes) -> Any:
            try:
                return deserialize(raw)
            except Exception as err:  # protobuf's DecodeError, whatever the implementation
                return _Undecodable(str(err))

        return tolerant

    def wrap_behaviour(self, method: str, behaviour: Behaviour) -> Behaviour:
        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                raise invalid(f"{method}: the request cannot be decoded ({request.reason}); it is "
                              "not valid protobuf for this call, or a string field holds bytes "
                              "that are not valid UTF-8 (CSI strings must be UTF-8)")
            return behaviour(request, context)

        return checked
