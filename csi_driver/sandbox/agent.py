"""A stand-in for the Datadog Agent, used by the sandbox and the tests:
DogStatsD on a datagram socket and APM on a stream socket, recording every
byte it receives."""

from __future__ import annotations

import os
import queue
import socket
import threading


class DemoAgent:
    def __init__(self, directory: str, dsd_name: str = "dsd.socket", apm_name: str = "apm.socket",
                 apm_directory: str | None = None) -> None:
        self.directory = directory
        self.dsd_path = os.path.join(directory, dsd_name)
        self.apm_path = os.path.join(apm_directory or directory, apm_name)
        self.dsd_received: queue.Queue[bytes] = queue.Queue()
        self.apm_received: queue.Queue[bytes] = queue.Queue()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        os.makedirs(os.path.dirname(self.dsd_path), exist_ok=True)
        os.makedirs(os.path.dirname(self.apm_path), exist_ok=True)

    def start(self) -> DemoAgent:
        # A new event per start: the threads of an earlier start must see their
        # own stop even when a restart follows it at once (they would spin on
        # their closed sockets otherwise).
        self._stop = stop = threading.Event()
        dsd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dsd.bind(self.dsd_path)
        os.chmod(self.dsd_path, 0o722)
        apm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        apm.bind(self.apm_path)
        os.chmod(self.apm_path, 0o722)
        apm.listen(64)
        for sock in (dsd, apm):
            sock.settimeout(0.2)
        self._sockets = [dsd, apm]
        threading.Thread(target=self._serve_dsd, args=(dsd, stop), daemon=True).start()
        threading.Thread(target=self._serve_apm, args=(apm, stop), daemon=True).start()
        return self

    def _serve_dsd(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.dsd_received.put(sock.recv(65536))
            except (TimeoutError, OSError):
                continue

    def _serve_apm(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                chunks = []
                while True:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    chunks.append(data)
                self.apm_received.put(b"".join(chunks))

    def stop(self) -> None:
        """Close the sockets and delete their files, as an agent shutting down does."""
        self._stop.set()
        for sock in self._sockets:
            sock.close()
        for path in (self.dsd_path, self.apm_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._sockets = []

    def restart(self) -> None:
        """The agent restarting: its sockets are deleted and created anew (new inodes)."""
        self.stop()
        self.start()

    def received(self, transport: str) -> queue.Queue[bytes]:
        """What arrived on DogStatsD ("dgram") or APM ("stream")."""
        return self.dsd_received if transport == "dgram" else self.apm_received

    @staticmethod
    def expect(received: queue.Queue[bytes], timeout: float = 5.0) -> bytes:
        return received.get(timeout=timeout)
