"""gRPC server lifecycle on the CSI Unix socket.

Start-up claims the endpoint safely (``endpoint.claim_endpoint``), binds the
metrics port first, and undoes what it started if anything fails.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import grpc

from csi_driver import mounts, recovery, stale_events
from csi_driver.admission import Pool
from csi_driver.agent_wait import AgentWait
from csi_driver.config import Config
from csi_driver.csi.v1 import csi_pb2, csi_pb2_grpc
from csi_driver.endpoint import claim_endpoint, listen_unix
from csi_driver.identity import IdentityService
from csi_driver.interceptors import Admission, Outcomes, RejectUndecodable, register
from csi_driver.library import family as library_family
from csi_driver.metrics import HttpServer, Metrics
from csi_driver.node import NodeService
from csi_driver.publisher import Publisher
from csi_driver.registry import PublishedVolumes
from csi_driver.sources import AgentSources
from csi_driver.volume_stats import count_stale

if TYPE_CHECKING:  # imported only when --kubelet-registration-path asks for it
    from csi_driver.registration import RegistrationServer

log = logging.getLogger("csi_driver.server")
# A call is a few hundred microseconds of Python (which holds the GIL) around
# a few dozen syscalls, each of which releases it. When other threads wait for
# the GIL, every such release hands it over: two context switches per syscall
# (bench/run.sh section [12]). So one call runs handler code at a time
# (``admission.Pool``): with the kubelet's connection per call and 32 callers
# that took CPU per pair from 3.1 to 2.2-2.5 ms and voluntary context switches
# from 62 to 22-35 per pair against three at a time, and served as many or
# more pairs/s. The pool starts up to ``WAITING`` more threads for calls that
# gave their turn back to wait (a library download, the agent's socket, a call
# for the same volume), so those never hold up the calls for other volumes.
# Calls beyond that queue and are served in order.
RUNNING = 1
WAITING = 31
GRACE_SECONDS = 30.0


class MetricsPortUnavailable(RuntimeError):
    pass


class Driver:
    """Everything one driver process runs: gRPC services and the HTTP endpoint."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sources = AgentSources(config)
        self.published = PublishedVolumes()
        self.publisher = Publisher(self.published, self.sources)
        # Both gauges are computed when scraped, from the registry itself.
        self.metrics = Metrics(published_by_type=self.published.counts_by_type,
                               stale_volumes=lambda: count_stale(self.published, self.sources))
        self._grpc: grpc.Server | None = None
        self._http: HttpServer | None = None
        self._registration: RegistrationServer | None = None
        self._stopped = threading.Event()
        self._serving = False
        self._pool = Pool(RUNNING, RUNNING + WAITING, name="csi")
        self.agent_wait = AgentWait(self.sources)
        self.stale_events = stale_events.StaleEvents()  # started once the volumes are adopted

    @property
    def socket_path(self) -> str:
        return self.config.socket_path

    def start(self) -> None:
        if self.config.metrics_port:
            # Bound first: a port already taken stops start-up here, before the
            # CSI endpoint exists, instead of leaving a socket nobody serves.
            try:
                self._http = HttpServer(self.metrics, self.config.metrics_port,
                                        live=lambda: self._serving, ready=self.ready,
                                        host=self.config.metrics_address)
            except OSError as err:
                raise MetricsPortUnavailable(
                    f"cannot listen on metrics address {self.config.metrics_address or '*'} port "
                    f"{self.config.metrics_port}: {os.strerror(err.errno or 0)} (set --metrics-port "
                    "to a free port, or 0 to disable metrics and health checks)") from None
        try:
            self._start_grpc()
            if self.config.kubelet_registration_path:
                from csi_driver.registration import RegistrationServer

                self._registration = RegistrationServer(self.config)
                self._registration.start()
        except BaseException:
            self._undo_start()
            raise
        if self._http is not None:
            self._http.start()
        log.info("serving", extra={"endpoint": self.config.csi_endpoint,
                                   "driver_name": self.config.driver_name,
                                   "node_id": self.config.node_id,
                                   "metrics_port": self.config.metrics_port})

    def _start_grpc(self) -> None:
        claim_endpoint(self.socket_path)
        mounts.set_staging_dir(os.path.join(self.config.storage_path, "mount-staging"))
        self.sources.log_resolution()
        self.publisher.libraries = library_family.start(self.config, self.metrics.registry)
        self._adopt_published_volumes()
        self.stale_events = stale_events.start(self.config, self.published, self.sources)
        # Typed as a ThreadPoolExecutor; grpcio only submits to it.
        server = grpc.server(self._pool, options=[("grpc.so_reuseport", 0)])  # type: ignore[arg-type]
        layers = [Admission(self._pool), Outcomes(self.metrics),
                  RejectUndecodable()]
        register(server, csi_pb2_grpc.add_IdentityServicer_to_server,
                 IdentityService(self.config), layers)
        register(server, csi_pb2_grpc.add_NodeServicer_to_server,
                 NodeService(self.config, self.publisher, self.agent_wait, self.stale_events), layers)
        listen_unix(server, self.socket_path)
        server.start()
        self._grpc = server
        self._serving = True

    def _undo_start(self) -> None:
        """Stop what a failed start had started; leave no socket behind."""
        self.publisher.libraries.close()
        self.stale_events.stop()
        self.agent_wait.stop()
        if self._registration is not None:
            self._registration.stop()
        if self._http is not None:
            self._http.stop()
        if self._grpc is not None:
            self._grpc.stop(0).wait()
            self._grpc = None
            self._serving = False
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        self._pool.shutdown(wait=False)

    def _adopt_published_volumes(self) -> None:
        """Take over the mounts an earlier process left, before any call arrives."""
        adopted = recovery.recover(self.config, self.published, self.sources,
                                   libraries=self.publisher.libraries)
        self.publisher.libraries.reconcile(self.published.snapshot())
        if adopted:
            log.info(f"adopted {len(adopted)} volumes published before this start",
                     extra={"stale_volumes": count_stale(self.published, self.sources)})

    def ready(self) -> bool:
        """A Probe over the real socket: proves the endpoint the kubelet uses works."""
        with grpc.insecure_channel(f"unix://{self.socket_path}") as channel:
            reply = csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=2)
        return reply.ready.value

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Stop accepting calls, let in-flight ones finish, remove the socket."""
        if self._grpc is None or self._stopped.is_set():
            return
        self._serving = False
        if self._registration is not None:
            self._registration.stop()  # the kubelet deregisters the driver first
        log.info("stopping: waiting for in-flight calls", extra={"grace_seconds": grace})
        self._grpc.stop(grace)  # refuse new calls from here on
        self.agent_wait.stop()  # calls waiting for the agent answer UNAVAILABLE now
        self.publisher.libraries.abort_pulls()  # a slow registry must not hold up the exit
        # ``grpc.Server.stop(grace)`` would also wait for idle client connections
        # to go away, which a kubelet never does: wait for the calls instead,
        # queued ones included.
        if not self._pool.wait_idle(grace):
            log.warning("grace period over; cancelling the calls still running")
        self._grpc.stop(0).wait()
        self._pool.shutdown(wait=False)  # idle threads exit; one stuck past the grace holds up nothing
        self.publisher.libraries.close()
        self.stale_events.stop()
        if self._http is not None:
            self._http.stop()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        log.info("stopped")
        self._stopped.set()
