"""AgentSocketStale pod events: which volumes are reported, how often, at what
rate, what is remembered across restarts, and that a broken API never holds up
publishing. The API is a small fake here (one HTTP handler for events); the
real one is exercised by tests/e2e."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from csi_driver import stale_events, validation
from csi_driver.config import ConfigError, load
from csi_driver.node import NodeService
from csi_driver.publisher import Publisher
from csi_driver.registry import PublishedVolumes
from csi_driver.sandbox import kubelet
from csi_driver.sources import AgentSources
from csi_driver.stale_events.bucket import TokenBucket
from csi_driver.stale_events.check import REASON, PostFailed, StaleCheck, StaleVolume
from csi_driver.stale_events.kube import KubeEvents, api_access
from csi_driver.stale_events.pods import PodRef, PodRefs, from_context


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakePoster:
    """Records what it is asked to post; fails while ``failure`` is set."""

    posted: list[StaleVolume] = field(default_factory=list)
    failure: PostFailed | None = None
    attempts: int = 0
    gate: threading.Event | None = None  # when set, a post blocks until it opens

    def post(self, volume: StaleVolume) -> None:
        self.attempts += 1
        if self.gate is not None:
            self.gate.wait(30)
        if self.failure is not None:
            raise self.failure
        self.posted.append(volume)


@dataclass
class Node:
    """The driver's parts a check looks at, on an in-memory mount table."""

    config: object
    publisher: Publisher
    pods: PodRefs
    service: NodeService | None = None

    def publish(self, volume_type: str, pod: str = "app", namespace: str = "shop",
                volume_name: str = "dd", uid: str | None = None) -> str:
        uid = uid or str(uuid.uuid4())
        kubelet.prepare_volume_dir(self.config.kubelet_root_dir, uid, volume_name)
        request = kubelet.publish_request(self.config.kubelet_root_dir, uid, volume_name,
                                          {"type": volume_type}, pod_name=pod, namespace=namespace)
        if self.service is not None:
            self.service.NodePublishVolume(request, None)
        else:
            req = validation.publish(request, self.config)
            self.publisher.publish(req)
            pod_ref = from_context(request.volume_context)
            if req.source.kind.value == "socket" and pod_ref is not None:
                self.pods.remember(req.target.path, pod_ref)
        return kubelet.target_path(self.config.kubelet_root_dir, uid, volume_name)


@pytest.fixture
def node(config, mount_table) -> Node:
    published = PublishedVolumes()
    return Node(config, Publisher(published, AgentSources(config)),
                PodRefs(os.path.join(config.storage_path, "pod-refs")))


def _check(node: Node, poster: FakePoster, bucket: TokenBucket | None = None) -> StaleCheck:
    return StaleCheck(node.config, node.publisher.published, node.publisher.sources, node.pods,
                      lambda: poster, bucket)


# ------------------------------------------------------------ what is reported

def test_an_agent_restart_reports_each_socket_file_volume_once(node, agent):
    dsd = node.publish("DSDSocket", pod="web")
    apm = node.publish("APMSocket", pod="worker", volume_name="apm")
    node.publish("DSDSocketDirectory", pod="dir-pod")
    node.publish("APMSocketDirectory", pod="dir-pod-2")
    poster = FakePoster()
    check = _check(node, poster)
    assert check.check() == 0 and check.post_pending() is None
    assert poster.posted == []

    agent.restart()
    assert check.check() == 2
    check.post_pending()
    assert sorted((v.pod.name, v.volume_name, v.target_path) for v in poster.posted) == [
        ("web", "dd", dsd), ("worker", "apm", apm)]
    for _ in range(3):  # later checks, and further agent restarts: the same dead socket
        check.check()
        check.post_pending()
        agent.restart()
    assert len(poster.posted) == 2


def test_the_message_names_the_volume_and_the_fix(node, agent, config):
    node.publish("APMSocket", volume_name="traces")
    agent.restart()
    poster = FakePoster()
    check = _check(node, poster)
    check.check()
    check.post_pending()
    (volume,) = poster.posted
    message = volume.message(config)
    assert "'traces' (APMSocket)" in message and config.apm_host_socket_path in message
    assert "Restart the pod" in message and "APMSocketDirectory" in message


def test_a_republished_volume_after_a_pod_restart_is_reported_again(node, agent):
    poster = FakePoster()
    check = _check(node, poster)
    uid = str(uuid.uuid4())
    target = node.publish("DSDSocket", uid=uid)
    agent.restart()
    check.check()
    check.post_pending()
    # The pod restarts: its volume is unpublished and published anew, on the live socket.
    node.publisher.unpublish(validation.unpublish(kubelet.unpublish_request(
        node.config.kubelet_root_dir, uid, "dd"), node.config))
    node.pods.forget(target)
    node.publish("DSDSocket", uid=uid)
    check.check()
    assert check.post_pending() is None and len(poster.posted) == 1
    agent.restart()
    check.check()
    check.post_pending()
    assert len(poster.posted) == 2 and poster.posted[0].mounted != poster.posted[1].mounted
    assert poster.posted[0].event_name != poster.posted[1].event_name


def test_a_volume_whose_pod_is_unknown_gets_no_event_and_no_retry(node, agent, caplog):
    node.publish("DSDSocket")
    node.pods._refs.clear()  # published before the events were on
    agent.restart()
    poster = FakePoster()
    check = _check(node, poster)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            check.check()
            check.post_pending()
    assert poster.posted == [] and poster.attempts == 0
    assert len([r for r in caplog.records if "pod is not known" in r.getMessage()]) == 1


def test_the_event_name_is_the_same_for_the_same_dead_socket():
    pod = PodRef("shop", "web-7d9f", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    first = StaleVolume("/t", pod, "dd", "DSDSocket", "/run/dsd.socket", (1, 2))
    assert first.event_name == dataclasses.replace(first, target_path="/other").event_name
    assert first.event_name != dataclasses.replace(first, mounted=(1, 3)).event_name
    assert first.event_name.startswith("web-7d9f.")
    long = dataclasses.replace(first, pod=PodRef("shop", "a" * 253, pod.uid))
    assert len(long.event_name) <= 253


# ---------------------------------------------------------------- rate limit

def test_events_leave_at_the_buckets_rate_and_none_is_lost(node, agent):
    targets = [node.publish("DSDSocket", pod=f"pod-{i}") for i in range(7)]
    agent.restart()
    clock = Clock()
    poster = FakePoster()
    check = _check(node, poster, TokenBucket(rate=0.5, burst=3, clock=clock))
    assert check.check() == 7
    wait = check.post_pending()
    assert len(poster.posted) == 3 and wait == pytest.approx(2.0)
    clock.now += 2
    assert check.post_pending() == pytest.approx(2.0) and len(poster.posted) == 4
    clock.now += 100
    assert check.post_pending() is None and len(poster.posted) == 7
    assert sorted(v.target_path for v in poster.posted) == sorted(targets)


def test_the_token_bucket():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() and not bucket.take()
    clock.now += 3600
    assert bucket.take() and bucket.take() and not bucket.take()  # never more than the burst


# ------------------------------------------------------------ API trouble

def test_an_unreachable_api_is_said_once_and_the_events_wait_for_it(node, agent, caplog):
    node.publish("DSDSocket", pod="a")
    node.publish("DSDSocket", pod="b", volume_name="b")
    agent.restart()
    poster = FakePoster()
    check = _check(node, poster)
    with caplog.at_level(logging.INFO):
        for attempt in range(4):
            # Each failure says it differently (addresses, timings): the same kind all the same.
            poster.failure = PostFailed(f"the Kubernetes API is unreachable (attempt {attempt})", retry=True,
                                        kind="unreachable")
            check.check()
            assert check.post_pending() is None  # no retry loop before the next check
        assert poster.attempts == 4  # one try per check, not one per event
        poster.failure = None
        check.check()
        check.post_pending()
    assert sorted(v.pod.name for v in poster.posted) == ["a", "b"]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot post" in m]) == 1
    assert len([m for m in messages if "posted again" in m]) == 1


def test_an_event_that_can_never_be_posted_is_dropped(node, agent):
    node.publish("DSDSocket")
    agent.restart()
    poster = FakePoster(failure=PostFailed("namespace shop is gone", retry=False))
    check = _check(node, poster)
    check.check()
    check.post_pending()
    check.check()
    check.post_pending()
    assert poster.attempts == 1


def test_a_hanging_api_never_holds_up_publish_and_unpublish(config, mount_table, agent):
    """The check thread is stuck in a post; CSI calls go on as usual."""
    fast = dataclasses.replace(config, stale_check_interval=1.0)
    published = PublishedVolumes()
    publisher = Publisher(published, AgentSources(fast))
    gate = threading.Event()
    poster = FakePoster(gate=gate)
    watching = stale_events.Watching(fast, published, publisher.sources, lambda: poster)
    node = Node(fast, publisher, watching._pods, NodeService(fast, publisher, None, watching))
    try:
        node.publish("DSDSocket", pod="stuck")
        agent.restart()
        for _ in range(600):
            if poster.attempts:
                break
            gate.wait(0.05)
        assert poster.attempts == 1 and not gate.is_set()  # the post hangs
        uids = [str(uuid.uuid4()) for _ in range(5)]
        for uid in uids:
            node.publish("DSDSocket", uid=uid)
        for uid in uids:
            node.service.NodeUnpublishVolume(kubelet.unpublish_request(fast.kubelet_root_dir, uid, "dd"), None)
        assert len(published.snapshot()) == 1
    finally:
        gate.set()
        watching.stop()
    assert [v.pod.name for v in poster.posted] == ["stuck"]


# --------------------------------------------------------- pods, remembered

def test_pods_come_from_the_kubelets_pod_info():
    context = {"csi.storage.k8s.io/pod.name": "web-1", "csi.storage.k8s.io/pod.namespace": "shop",
               "csi.storage.k8s.io/pod.uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}
    assert from_context(context) == PodRef("shop", "web-1", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert from_context({}) is None
    for key, bad in (("csi.storage.k8s.io/pod.name", "Web 1"), ("csi.storage.k8s.io/pod.namespace", "a/b"),
                     ("csi.storage.k8s.io/pod.uid", "x" * 200), ("csi.storage.k8s.io/pod.name", "")):
        assert from_context({**context, key: bad}) is None, (key, bad)


def test_pods_are_remembered_on_disk_for_the_next_process(tmp_path):
    directory = str(tmp_path / "pod-refs")
    first = PodRefs(directory)
    first.load([])
    web, worker = PodRef("shop", "web", "u1"), PodRef("shop", "worker", "u2")
    first.remember("/k/pods/u1/volumes/kubernetes.io~csi/dd/mount", web)
    first.remember("/k/pods/u2/volumes/kubernetes.io~csi/dd/mount", worker)
    first.remember("/k/pods/u3/volumes/kubernetes.io~csi/dd/mount", PodRef("shop", "gone", "u3"))
    first.forget("/k/pods/u3/volumes/kubernetes.io~csi/dd/mount")
    (tmp_path / "pod-refs" / "junk.json").write_text("{not json")
    (tmp_path / "pod-refs" / ("0" * 40 + ".json")).write_text(json.dumps(
        {"target": "/k/pods/u9/volumes/kubernetes.io~csi/dd/mount", "namespace": "shop", "name": "x",
         "uid": "u9"}))  # a name that is not its target's: not ours

    second = PodRefs(directory)
    assert second.load({"/k/pods/u1/volumes/kubernetes.io~csi/dd/mount"}) == 1
    assert second.get("/k/pods/u1/volumes/kubernetes.io~csi/dd/mount") == web
    assert second.get("/k/pods/u2/volumes/kubernetes.io~csi/dd/mount") is None
    # Files of volumes unpublished while no driver ran, and files that are not ours, are gone.
    assert len(os.listdir(directory)) == 1


def test_without_a_usable_directory_pods_are_kept_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    refs = PodRefs(str(tmp_path / "file" / "pod-refs"))
    with caplog.at_level(logging.WARNING):
        assert refs.load([]) == 0
    assert "kept in memory only" in caplog.text
    refs.remember("/t", PodRef("shop", "web", "u1"))
    assert refs.get("/t") == PodRef("shop", "web", "u1")


def test_only_socket_file_volumes_with_pod_info_are_remembered(config, mount_table, agent):
    published = PublishedVolumes()
    publisher = Publisher(published, AgentSources(config))
    watching = stale_events.Watching(dataclasses.replace(config, stale_check_interval=3600.0),
                                     published, publisher.sources, FakePoster)
    try:
        node = Node(config, publisher, watching._pods, NodeService(config, publisher, None, watching))
        file_target = node.publish("DSDSocket")
        dir_target = node.publish("DSDSocketDirectory")
        assert watching._pods.get(file_target) == PodRef("shop", "app", file_target.split("/")[-5])
        assert watching._pods.get(dir_target) is None
        assert len(os.listdir(os.path.join(config.storage_path, "pod-refs"))) == 1
    finally:
        watching.stop()


# ------------------------------------------------------------ on or off

def test_off_without_an_interval_or_an_api(config, caplog, monkeypatch):
    published, sources = PublishedVolumes(), AgentSources(config)
    off = stale_events.start(dataclasses.replace(config, stale_check_interval=0.0), published, sources)
    assert type(off) is stale_events.StaleEvents
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with caplog.at_level(logging.INFO):
        assert type(stale_events.start(config, published, sources)) is stale_events.StaleEvents
    assert "not running in a cluster and no --kubeconfig" in caplog.text
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert "no service account token" in (api_access(config) or "")


def test_interval_flag():
    assert load([], {"NODE_ID": "n"}).stale_check_interval == 60
    assert load(["--stale-check-interval", "0"], {"NODE_ID": "n"}).stale_check_interval == 0
    with pytest.raises(ConfigError, match="at least 1s"):
        load(["--stale-check-interval", "200ms"], {"NODE_ID": "n"})
    with pytest.raises(ConfigError, match="is not a file"):
        load(["--kubeconfig", "/nonexistent/kubeconfig"], {"NODE_ID": "n"})


# ------------------------------------------------- the API client, on a fake API

class FakeEventsApi(http.server.ThreadingHTTPServer):
    """Answers POST /api/v1/namespaces/<ns>/events with ``status``; records the bodies."""

    def __init__(self) -> None:
        self.status = 201
        self.bodies: list[tuple[str, dict]] = []
        super().__init__(("127.0.0.1", 0), _EventsHandler)


class _EventsHandler(http.server.BaseHTTPRequestHandler):
    server: FakeEventsApi

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append((self.path, body))
        status = self.server.status
        reply = body if status == 201 else {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "code": status, "reason": "Forbidden"}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _kubeconfig(path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


@pytest.fixture
def fake_api() -> Iterator[FakeEventsApi]:
    server = FakeEventsApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


STALE = StaleVolume("/k/pods/u1/volumes/kubernetes.io~csi/dd/mount",
                    PodRef("shop", "web", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
                    "dd", "DSDSocket", "/var/run/datadog/dsd.socket", (7, 42))


def test_the_event_as_the_api_receives_it(config, fake_api, tmp_path):
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{fake_api.server_port}")
    events = KubeEvents(dataclasses.replace(config, kubeconfig=kubeconfig, node_id="node-a"))
    events.post(STALE)
    ((path, body),) = fake_api.bodies
    assert path == "/api/v1/namespaces/shop/events"
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "shop",
                                      "name": "web", "uid": STALE.pod.uid}
    assert body["metadata"] == {"name": STALE.event_name, "namespace": "shop"}
    assert (body["type"], body["reason"], body["count"]) == ("Warning", REASON, 1)
    assert body["source"] == {"component": "k8s.csi.datadoghq.com", "host": "node-a"}
    assert (body["reportingComponent"], body["reportingInstance"]) == ("k8s.csi.datadoghq.com", "node-a")
    assert "'dd' (DSDSocket)" in body["message"]


def test_api_answers_become_retry_or_drop(config, fake_api, tmp_path):
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{fake_api.server_port}")
    events = KubeEvents(dataclasses.replace(config, kubeconfig=kubeconfig))
    fake_api.status = 409  # an earlier driver process posted it
    events.post(STALE)
    fake_api.status = 403
    with pytest.raises(PostFailed) as failed:
        events.post(STALE)
    assert failed.value.retry and "create events" in failed.value.problem
    fake_api.status = 404
    with pytest.raises(PostFailed) as failed:
        events.post(STALE)
    assert not failed.value.retry
    fake_api.status = 503
    with pytest.raises(PostFailed) as failed:
        events.post(STALE)
    assert failed.value.retry


def test_an_api_that_is_not_there_is_unreachable(config, tmp_path):
    server = FakeEventsApi()
    port = server.server_port
    server.server_close()  # nothing listens there any more
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    with pytest.raises(PostFailed) as failed:
        KubeEvents(dataclasses.replace(config, kubeconfig=kubeconfig)).post(STALE)
    assert failed.value.retry and "unreachable" in failed.value.problem


def test_a_broken_kubeconfig_is_a_reason_not_a_crash(config, tmp_path):
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: 12")
    with pytest.raises(PostFailed, match="cannot be configured"):
        KubeEvents(dataclasses.replace(config, kubeconfig=str(broken)))
