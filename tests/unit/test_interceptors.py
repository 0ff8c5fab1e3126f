"""The one request path: every outcome becomes its status, its log line and its
metrics observation; handlers are wrapped once, at registration."""

from __future__ import annotations

import json
import logging
import threading
from concurrent import futures

import grpc
import pytest

from csi_driver import logs
from csi_driver.admission import Pool
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.errors import invalid, not_found, unsupported
from csi_driver.interceptors import Admission, Layer, Outcomes, RejectUndecodable, current, register
from csi_driver.metrics import PUBLISH_ATTEMPTS, Metrics


class FakeNode(csi_pb2_grpc.NodeServicer):
    """Each method misbehaves in its own way."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def NodePublishVolume(self, request, context):
        call = current()
        call.volume_type = request.volume_context.get("type", "")
        if call.volume_type == "Unknown":
            raise unsupported("unknown volume type")
        call.host_path = "/run/datadog/dsd.socket"
        call.message = "already published"
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request, context):
        raise not_found(f"nothing at {request.target_path}")

    def NodeGetInfo(self, request, context):
        raise ValueError("a bug")

    def NodeGetCapabilities(self, request, context):
        self.entered.set()
        self.release.wait(10)
        return csi_pb2.NodeGetCapabilitiesResponse()

    def NodeGetVolumeStats(self, request, context):
        raise invalid("volume_path is required")


class CountingLayer(Layer):
    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def wrap_behaviour(self, method, behaviour):
        self.wrapped.append(method)
        return behaviour


@pytest.fixture
def served(tmp_path, caplog):
    metrics, pool, counting, node = Metrics(), Pool(1, 4, name="test"), CountingLayer(), FakeNode()
    server = grpc.server(pool)
    register(server, csi_pb2_grpc.add_NodeServicer_to_server, node,
             [Admission(pool), counting, Outcomes(metrics), RejectUndecodable()])
    endpoint = f"unix://{tmp_path}/csi.sock"
    server.add_insecure_port(endpoint)
    server.start()
    channel = grpc.insecure_channel(endpoint)
    yield {"stub": csi_pb2_grpc.NodeStub(channel), "channel": channel, "metrics": metrics,
           "pool": pool, "counting": counting, "node": node}
    node.release.set()
    channel.close()
    server.stop(0).wait()
    pool.shutdown()


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def _call_lines(caplog) -> list[dict]:
    formatter = logs.JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "csi_driver.calls"]


def test_each_outcome_gets_its_status_log_line_and_metrics(served, caplog):
    stub, metrics = served["stub"], served["metrics"]
    with caplog.at_level(logging.DEBUG, logger="csi_driver.calls"):
        stub.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id="v1", target_path="/t", volume_context={"type": "DSDSocket"}))
        code, _ = _status(lambda: stub.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_context={"type": "Unknown"})))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert _status(lambda: stub.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id="v1", target_path="/gone"))) == (grpc.StatusCode.NOT_FOUND, "nothing at /gone")
        code, details = _status(lambda: stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest()))
        assert code == grpc.StatusCode.INTERNAL and "a bug" in details
        assert _status(lambda: stub.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest()))[0] \
            == grpc.StatusCode.INVALID_ARGUMENT

    lines = _call_lines(caplog)
    summary = [(line["method"], line["outcome"], line["level"]) for line in lines
               if "outcome" in line]
    assert summary == [
        ("NodePublishVolume", "OK", "info"),
        ("NodePublishVolume", "INVALID_ARGUMENT", "warning"),
        ("NodeUnpublishVolume", "NOT_FOUND", "warning"),
        ("NodeGetInfo", "INTERNAL", "warning"),
        ("NodeGetVolumeStats", "INVALID_ARGUMENT", "warning"),
    ]
    published = next(line for line in lines if line.get("outcome") == "OK")
    assert published["msg"] == "NodePublishVolume: already published"
    assert published["volume_id"] == "v1" and published["type"] == "DSDSocket"
    assert any(line["level"] == "error" and "Traceback" in line.get("error", "") for line in lines)
    attempts = metrics.attempts
    assert attempts.value(PUBLISH_ATTEMPTS, type="DSDSocket", path="/run/datadog/dsd.socket",
                          status="success") == 1
    assert attempts.value(PUBLISH_ATTEMPTS, type="Unknown", path="", status="unsupported") == 1
    assert attempts.value("datadog_csi_driver_node_unpublish_volume_attempts", status="failed") == 1


def test_queries_that_succeed_log_at_debug(served, caplog):
    served["node"].release.set()
    with caplog.at_level(logging.DEBUG, logger="csi_driver.calls"):
        served["stub"].NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    (line,) = _call_lines(caplog)
    assert (line["method"], line["outcome"], line["level"]) == ("NodeGetCapabilities", "OK", "debug")


def test_undecodable_requests_are_invalid_and_counted(served):
    publish = served["channel"].unary_unary("/csi.v1.Node/NodePublishVolume")
    code, details = _status(lambda: publish(b"\x0a\x05\xff\xfe\xfd\xfc\xfb"))  # volume_id: bad UTF-8
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot be decoded" in details
    assert served["metrics"].attempts.value(PUBLISH_ATTEMPTS, type="invalid", path="",
                                            status="failed") == 1


def test_layers_wrap_each_method_once_at_registration(served):
    counting = served["counting"]
    names = sorted(method.rsplit("/", 1)[1] for method in counting.wrapped)
    assert names == sorted(csi_pb2.DESCRIPTOR.services_by_name["Node"].methods_by_name)
    for _ in range(3):
        _status(lambda: served["stub"].NodeGetInfo(csi_pb2.NodeGetInfoRequest()))
    assert len(counting.wrapped) == len(names)  # no wrapping per call


def test_the_pool_counts_running_and_queued_calls(served):
    pool, node = served["pool"], served["node"]
    first = served["stub"].NodeGetCapabilities.future(csi_pb2.NodeGetCapabilitiesRequest())
    assert node.entered.wait(5)
    queued = served["stub"].NodePublishVolume.future(csi_pb2.NodePublishVolumeRequest())
    assert not pool.wait_idle(0.2)
    node.release.set()
    first.result(timeout=5)
    queued.result(timeout=5)
    assert pool.wait_idle(5)


def test_register_refuses_code_that_does_not_hand_over_its_handlers():
    def old_style(servicer, server):
        server.add_generic_rpc_handlers(())

    with pytest.raises(RuntimeError, match="did not hand over"):
        register(grpc.server(futures.ThreadPoolExecutor(1)), old_style, object(), [])
