"""Hostile requests against the real driver, fuzzed over every request field.

Every answer must be a CSI status (see ``harness.ALLOWED``); after every
example the driver still answers Probe, nothing is mounted or created outside
the kubelet pods directory, and whatever was published can be unpublished.
"""

from __future__ import annotations

import os

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csi_driver.csi.v1 import csi_pb2
from csi_driver.sandbox import kubelet
from fuzz import harness, strategies
from fuzz.harness import Layout

FUZZ = settings(max_examples=harness.examples(), deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)
PUBLISH = "/csi.v1.Node/NodePublishVolume"
UNPUBLISH = "/csi.v1.Node/NodeUnpublishVolume"
STATS = "/csi.v1.Node/NodeGetVolumeStats"


@st.composite
def operations(draw, layout: Layout):
    """One to four calls, so republishing, conflicting volume ids, and
    unpublishing and stat'ing what was just published all happen."""
    op = st.one_of(
        strategies.publish_requests(layout).map(lambda r: (PUBLISH, r)),
        strategies.publish_requests(layout).map(lambda r: (PUBLISH, r)),
        strategies.unpublish_requests(layout).map(lambda r: (UNPUBLISH, r)),
        strategies.stats_requests(layout).map(lambda r: (STATS, r)),
    )
    return draw(st.lists(op, min_size=1, max_size=4))


def test_node_calls_with_hostile_fields(counted):
    fuzz = counted
    published = []

    @FUZZ
    @given(operations(fuzz.layout))
    def run(ops):
        for method, request in ops:
            code, _ = fuzz.call(method, request)
            if method == PUBLISH and code == grpc.StatusCode.OK:
                published.append(request.target_path)
                assert os.path.realpath(request.target_path).startswith(fuzz.layout.pods_dir + "/")
        fuzz.check()

    run()
    # The fuzzer must have got past validation, or it proved little.
    assert published, "no fuzzed publish ever succeeded"
    assert fuzz.codes["OK"] and fuzz.codes["INVALID_ARGUMENT"]
    harness.report(f"fuzz[node-calls]: {len(published)} publishes succeeded, "
                   f"{len(set(published))} distinct targets")


def test_every_call_with_arbitrary_fields(counted):
    """Every Identity and Node call, every field of its request set to anything."""
    fuzz = counted
    calls = harness.methods()

    @FUZZ
    @given(st.sampled_from(calls).flatmap(
        lambda call: strategies.messages(call[1]).map(lambda msg: (call[0], msg))))
    def run(call):
        method, request = call
        fuzz.call(method, request)
        fuzz.check()

    run()


def test_fds_do_not_leak(counted):
    """Publish, stat and unpublish at every trap, twenty times over: the
    driver's open descriptors stay flat (a long-running driver must not leak)."""
    fuzz = counted
    before = fuzz.open_fds()
    layout = fuzz.layout
    for _ in range(20):
        for method, request in _every_path_once(layout):
            fuzz.call(method, request)
        fuzz.check()
    after = fuzz.open_fds()
    assert after - before <= 4, f"driver fds grew from {before} to {after}"


def _every_path_once(layout: Layout):
    """A fixed round of calls through each branch that opens a descriptor."""
    kinds = ("DSDSocket", "DSDSocketDirectory")
    odd = [layout.target("good", "odd", leaf) for leaf in Layout.LEAVES]
    for target in odd + [layout.target(pod=p) for p in Layout.PODS]:
        for kind in kinds:
            yield PUBLISH, kubelet.publish_request_at(target, strategies.VOLUME_IDS[0],
                                                      {"type": kind})
            yield STATS, csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=strategies.VOLUME_IDS[0], volume_path=target)
            yield UNPUBLISH, csi_pb2.NodeUnpublishVolumeRequest(
                volume_id=strategies.VOLUME_IDS[0], target_path=target)
