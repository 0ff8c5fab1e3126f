"""A real OCI registry on loopback, test images pushed to it, and its traffic counted.

``OciRegistry`` runs the distribution registry (``docker-registry``, installed
into .tools/bin by scripts/install-registry.sh) on 127.0.0.1 with one of three
authentication setups:

- ``Auth.TOKEN`` (the default, what real registries do): the registry answers
  401 with ``WWW-Authenticate: Bearer realm=...``; the realm is a token service
  run here, in-process, that signs JWTs with a throw-away key the registry
  trusts. Anonymous clients get pull access to every repository except those
  under ``private/``; ``USERNAME``/``PASSWORD`` get everything.
- ``Auth.BASIC``: htpasswd, ``Basic`` challenges, every repository needs ``USERNAME``/``PASSWORD``.
- ``Auth.NONE``: no authentication at all.

Clients talk to ``registry.host``: a small reverse proxy in front of the
registry that records every request (``requests``/``count``) and can be told to
misbehave for paths containing a string (``inject``): answer 503, stall,
trickle, cut a body short or flip one of its bytes. A real registry never serves
bytes that do not match their digest; the proxy is how tests get one that does.
Images are pushed straight to the registry (``direct_host``), so pushes are not
counted.

Images are built here from Python data: ``files_layer`` (a mapping of paths to
contents), ``dir_layer`` (a directory tree), ``tar_layer`` (explicit tar
members, for hostile layers) and ``raw_layer`` (any bytes); ``push_image``
pushes a single manifest, ``push_index`` an index with a manifest per platform.
"""

from __future__ import annotations

import base64
import datetime
import enum
import gzip
import hashlib
import http.client
import io
import itertools
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
USERNAME = "puller"
PASSWORD = "pull-secret"
PRIVATE_PREFIX = "private/"
SERVICE = "oci-test-registry"
ISSUER = "oci-test-token-service"
# bcrypt (cost 4, the minimum: the registry checks it on every request) of PASSWORD.
PASSWORD_BCRYPT = "$2b$04$9GoMGMFqCiBtvkmqhJLg6.uYMwyKMgpX.dxt6t9GdLlela87luU.a"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_DOCKER_TYPES = {OCI_LAYER_GZIP: DOCKER_LAYER_GZIP, OCI_LAYER: "application/vnd.docker.image.rootfs.diff.tar"}

_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
HOST_PLATFORM = ("linux", _ARCHITECTURES.get(platform.machine().lower(), platform.machine().lower()))
# A platform this host is not: the index's second entry.
OTHER_PLATFORM = ("linux", "arm64") if HOST_PLATFORM[1] != "arm64" else ("linux", "amd64")

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailers", "transfer-encoding", "upgrade"})
_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^?]*)")
_names = itertools.count(1)
# How long a STALL or TRICKLE fault holds back a response before giving in and
# answering normally: a client that ignores its deadline then gets its answer
# and fails its test, instead of hanging it. A test may lengthen it for itself
# (``OciRegistry.fault_seconds``, back to this on ``reset``).
FAULT_SECONDS = 10.0


def unique_repository(prefix: str = "lib") -> str:
    """A repository name no other test of this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry_binary() -> str:
    found = shutil.which("docker-registry") or str(REPO / ".tools" / "bin" / "docker-registry")
    if not os.access(found, os.X_OK):
        raise RuntimeError("no docker-registry binary: run scripts/install-registry.sh "
                           "(scripts/test.sh does for tests/library)")
    return found


def dockerconfigjson(host: str, username: str = USERNAME, password: str = PASSWORD, *,
                     split_fields: bool = False) -> str:
    """A ``.dockerconfigjson`` document with one login, as ``auth`` or as username/password."""
    if split_fields:
        entry = {"username": username, "password": password}
    else:
        entry = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    return json.dumps({"auths": {host: entry}})


# --- layers and images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    data: bytes  # the blob as pushed
    media_type: str  # OCI's; Docker manifests get Docker's equivalent
    diff_id: str  # digest of the uncompressed tar (the image config's rootfs)

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, docker: bool = False) -> dict[str, object]:
        media_type = _DOCKER_TYPES.get(self.media_type, self.media_type) if docker else self.media_type
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


def _finish_tar(tar_data: bytes, compress: bool) -> Layer:
    if not compress:
        return Layer(tar_data, OCI_LAYER, sha256_digest(tar_data))
    return Layer(gzip.compress(tar_data, mtime=0), OCI_LAYER_GZIP, sha256_digest(tar_data))


def tar_layer(members: Iterable[tuple[tarfile.TarInfo, bytes | None]], *, compress: bool = True) -> Layer:
    """A layer of exactly these tar members (data for regular files), nothing checked: hostile layers too."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return _finish_tar(buffer.getvalue(), compress)


def _member(name: str, kind: bytes, mode: int, data: bytes | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    return info, data


def files_layer(files: Mapping[str, bytes | str], *, compress: bool = True, mode: int = 0o644) -> Layer:
    """A layer holding these files (parent directories added), e.g. {"datadog-init/package/lib.so": b"..."}."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    directories: set[str] = set()
    for name in sorted(files):
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in directories:
                directories.add(directory)
                members.append(_member(directory, tarfile.DIRTYPE, 0o755))
        content = files[name]
        members.append(_member("/".join(parts), tarfile.REGTYPE, mode,
                               content.encode() if isinstance(content, str) else content))
    return tar_layer(members, compress=compress)


def dir_layer(root: Path, *, compress: bool = True) -> Layer:
    """A layer of the tree under ``root``, names relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return _finish_tar(buffer.getvalue(), compress)


def raw_layer(data: bytes, media_type: str = OCI_LAYER_GZIP) -> Layer:
    """Any bytes as a layer (zstd, garbage, ...); its diff id is a stand-in."""
    return Layer(data, media_type, sha256_digest(data))


@dataclass(frozen=True)
class PushedImage:
    repository: str
    digest: str  # of the manifest
    size: int
    media_type: str
    platform: tuple[str, str]
    layers: tuple[Layer, ...]
    tag: str | None = None


@dataclass(frozen=True)
class PushedIndex:
    repository: str
    digest: str  # of the index
    media_type: str
    manifests: dict[tuple[str, str], PushedImage]
    tag: str | None = None


# --- HTTP servers of the fixture ---------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up (a pull given up at its deadline) is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


# --- token service ------------------------------------------------------------------------------------


class TokenService:
    """Issues registry tokens signed with a key made at start; the registry trusts its certificate."""

    def __init__(self, workdir: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + datetime.timedelta(days=2))
                       .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                       .sign(self._key, hashes.SHA256()))
        self.certificate_path = workdir / "token-signer.pem"
        self.certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
        self.issued: list[tuple[str | None, str]] = []  # (account or None for anonymous, scope)
        self.refused = 0
        self._server = _Server(("127.0.0.1", 0), _TokenHandler)
        self._server.service = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> TokenService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mint(self, account: str | None, access: list[dict[str, object]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": account or "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def grant(self, account: str | None, scope: str) -> list[dict[str, object]]:
        """What ``account`` may do of ``scope`` (``repository:<name>:<actions>``)."""
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return []
        if account is not None:
            allowed = actions.split(",")
        elif name.startswith(PRIVATE_PREFIX):
            allowed = []
        else:
            allowed = [a for a in actions.split(",") if a == "pull"]
        return [{"type": "repository", "name": name, "actions": allowed}] if allowed else []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _account(self) -> tuple[bool, str | None]:
        """(credentials acceptable, account); no credentials is the anonymous account."""
        header = self.headers.get("Authorization", "")
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        ok = scheme.lower() == "basic" and (username, password) == (USERNAME, PASSWORD)
        return ok, username if ok else None

    def do_GET(self) -> None:
        service: TokenService = self.server.service  # type: ignore[attr-defined]
        query = parse_qs(urlsplit(self.path).query)
        ok, account = self._account()
        if not ok or query.get("service") != [SERVICE]:
            service.refused += 1
            self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
            return
        access: list[dict[str, object]] = []
        for scope in query.get("scope", []):
            service.issued.append((account, scope))
            access += service.grant(account, scope)
        token = service.mint(account, access)
        self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

    def _answer(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- counting, misbehaving proxy ----------------------------------------------------------------------


class Fault(enum.Enum):
    UNAVAILABLE = "answer 503"
    STALL = "send nothing for fault_seconds"
    TRICKLE = "send the body a byte every 0.2 s for fault_seconds"
    TRUNCATE = "send half the body, then close"
    CORRUPT = "flip one byte of the body"
    REDIRECT = "redirect to the registry's own address, as registries do to blob storage"


@dataclass
class RecordedRequest:
    method: str
    path: str
    repository: str  # "" for /v2/ itself
    kind: str  # "manifests", "blobs", "tags", or "" for others (/v2/, uploads)
    reference: str  # tag or digest
    accept: str
    authorization: str  # the scheme sent ("Bearer", "Basic") or ""
    status: int = 0  # the status answered; 0 while (or if never) answered


def _record(method: str, path: str, headers: Mapping[str, str]) -> RecordedRequest:
    match = _PATH.match(path)
    repository, kind, reference = (match["name"], match["kind"], match["ref"]) if match else ("", "", "")
    if kind == "blobs" and reference.startswith("uploads"):
        kind, reference = "", ""
    scheme = headers.get("Authorization", "").partition(" ")[0]
    return RecordedRequest(method, path, repository, kind, reference, headers.get("Accept", ""), scheme)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _recorded: RecordedRequest | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    # Clients only read; pushes go to the registry directly.
    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._recorded is not None:
            self._recorded.status = code
        super().send_response(code, message)

    def _forward(self) -> None:
        registry: OciRegistry = self.server.registry  # type: ignore[attr-defined]
        self._recorded = _record(self.command, self.path, self.headers)
        registry._record(self._recorded)
        fault = registry._fault_for(self.path)
        if fault is Fault.UNAVAILABLE:
            self._send_error_body(503)
            return
        held = registry._released
        if fault is Fault.STALL and held.wait(registry.fault_seconds) and held.hang_up:
            self.close_connection = True  # the test is over: just hang up
            return
        if fault is Fault.REDIRECT:
            self.send_response(307)
            self.send_header("Location", f"http://{registry.direct_host}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection("127.0.0.1", registry.registry_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, headers=headers)
            self._relay(upstream.getresponse(), fault, registry)
        finally:
            upstream.close()

    def _send_error_body(self, status: int) -> None:
        body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _start_response(self, response: http.client.HTTPResponse, length: int) -> None:
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _relay(self, response: http.client.HTTPResponse, fault: Fault | None, registry: OciRegistry) -> None:
        announced = response.getheader("Content-Length")
        if fault is None and announced is not None and self.command != "HEAD":
            self._start_response(response, int(announced))
            while chunk := response.read(1 << 18):
                self.wfile.write(chunk)
            return
        data = response.read()
        self._start_response(response, int(announced) if self.command == "HEAD" and announced else len(data))
        if self.command == "HEAD" or not data:
            return
        if fault is Fault.CORRUPT:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if fault is Fault.TRUNCATE:
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        elif fault is Fault.TRICKLE:
            self._trickle(data, registry._released, registry.fault_seconds)
        else:
            self.wfile.write(data)

    def _trickle(self, data: bytes, released: _Release, seconds: float) -> None:
        give_in = time.monotonic() + seconds
        for offset in range(len(data)):
            if released.wait(0.2):
                if released.hang_up:
                    self.close_connection = True
                else:
                    self.wfile.write(data[offset:])
                return
            if time.monotonic() > give_in:
                self.wfile.write(data[offset:])
                return
            self.wfile.write(data[offset:offset + 1])
            self.wfile.flush()


# --- the registry --------------------------------------------------------------------------------------


class _Release(threading.Event):
    """Set when the responses faults hold back are let go: hung up on (``reset``),
    or answered as if nothing had held them (``release``)."""

    hang_up = True


class Auth(enum.Enum):
    NONE = "none"
    BASIC = "basic"
    TOKEN = "token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OciRegistry:
    workdir: Path
    auth: Auth = Auth.TOKEN
    registry_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    tokens: TokenService | None = None
    _proxy: ThreadingHTTPServer | None = None
    _requests: list[RecordedRequest] = field(default_factory=list)
    _faults: list[tuple[str, Fault]] = field(default_factory=list)
    fault_seconds: float = FAULT_SECONDS  # how long STALL and TRICKLE hold a response at most
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: _Release = field(default_factory=_Release)

    # Addresses ------------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """host:port for clients: the counting proxy."""
        assert self._proxy is not None
        return f"127.0.0.1:{self._proxy.server_address[1]}"

    @property
    def direct_host(self) -> str:
        """host:port of the registry itself, uncounted (benchmarks)."""
        return f"127.0.0.1:{self.registry_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    # Lifecycle -------------------------------------------------------------------------------------------
    def _auth_config(self) -> dict[str, object]:
        if self.auth is Auth.TOKEN:
            assert self.tokens is not None
            return {"token": {"realm": self.tokens.realm, "service": SERVICE, "issuer": ISSUER,
                              "rootcertbundle": str(self.tokens.certificate_path)}}
        if self.auth is Auth.BASIC:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{USERNAME}:{PASSWORD_BCRYPT}\n")
            return {"htpasswd": {"realm": "oci-test-registry", "path": str(htpasswd)}}
        return {}

    def _write_config(self) -> Path:
        config: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"127.0.0.1:{self.registry_port}", "secret": secrets.token_hex(16)},
        }
        if auth := self._auth_config():
            config["auth"] = auth
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    def start(self) -> OciRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.auth is Auth.TOKEN:
            self.tokens = TokenService(self.workdir).start()
        self.registry_port = _free_port()
        config = self._write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([registry_binary(), "serve", str(config)], stdout=log, stderr=log)
        self._wait_ready()
        self._proxy = _Server(("127.0.0.1", 0), _ProxyHandler)
        self._proxy.registry = self  # type: ignore[attr-defined]
        threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self.process.returncode}): "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.registry_port, timeout=2)
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    conn.close()
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer within 30 s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self._released.set()
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.tokens is not None:
            self.tokens.stop()

    # Requests and faults ---------------------------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, repository: str | None = None, kind: str | None = None) -> list[RecordedRequest]:
        """Requests clients made through ``host`` since the last ``reset``."""
        with self._lock:
            return [r for r in self._requests
                    if (repository is None or r.repository == repository) and (kind is None or r.kind == kind)]

    def count(self, repository: str, kind: str | None = None, method: str = "GET", *,
              successful: bool = False) -> int:
        """How many ``method`` requests reached ``repository``'s manifests or blobs (or both: kind None);
        with ``successful``, only those answered 2xx (a 401 asking for a token does not count)."""
        return sum(1 for r in self.requests(repository, kind)
                   if r.method == method and r.kind and (not successful or 200 <= r.status < 300))

    def inject(self, match: str, fault: Fault) -> None:
        """Misbehave for every request whose path contains ``match`` (a digest, a tag, a repository)."""
        with self._lock:
            self._faults.append((match, fault))

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            return next((fault for match, fault in self._faults if match in path), None)

    def reset(self) -> None:
        """Forget recorded requests, lift every fault and hang up on the responses they held."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self.fault_seconds = FAULT_SECONDS
            released, self._released = self._released, _Release()
        released.set()

    def release(self) -> None:
        """Lift every fault; the responses held back go on as if never held (recorded
        requests are kept)."""
        with self._lock:
            self._faults.clear()
            released, self._released = self._released, _Release()
        released.hang_up = False
        released.set()

    # Pushing ----------------------------------------------------------------------------------------------
    def _push_authorization(self, repository: str) -> dict[str, str]:
        if self.auth is Auth.TOKEN:
            assert self.tokens is not None
            access = [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
            return {"Authorization": "Bearer " + self.tokens.mint(USERNAME, access)}
        if self.auth is Auth.BASIC:
            return {"Authorization": "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()}
        return {}

    def _direct(self, method: str, target: str, body: bytes | None, headers: dict[str, str]
                ) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.registry_port, timeout=120)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read()
            if response.status >= 300:
                raise RuntimeError(f"{method} {target}: HTTP {response.status}: {text[:500]!r}")
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256_digest(data)
        auth = self._push_authorization(repository)
        _, headers = self._direct("POST", f"/v2/{repository}/blobs/uploads/", b"", auth)
        location = urlsplit(headers["location"])
        target = f"{location.path}?{location.query}&digest={digest}" if location.query else \
            f"{location.path}?digest={digest}"
        self._direct("PUT", target, data, {**auth, "Content-Type": "application/octet-stream"})
        return digest

    def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        self._direct("PUT", f"/v2/{repository}/manifests/{reference}", body,
                     {**self._push_authorization(repository), "Content-Type": media_type})
        return sha256_digest(body)

    def push_image(self, repository: str, layers: Sequence[Layer], *, tag: str | None = None,
                   platform: tuple[str, str] = HOST_PLATFORM, docker: bool = False) -> PushedImage:
        """A single image manifest (OCI, or Docker v2 with ``docker``) with its config and layers."""
        config = json.dumps({"architecture": platform[1], "os": platform[0], "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}).encode()
        self.push_blob(repository, config)
        for layer in layers:
            self.push_blob(repository, layer.data)
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                       "digest": sha256_digest(config), "size": len(config)},
            "layers": [layer.descriptor(docker) for layer in layers],
        }).encode()
        digest = self.push_manifest(repository, tag or sha256_digest(manifest), manifest, media_type)
        return PushedImage(repository, digest, len(manifest), media_type, platform, tuple(layers), tag)

    def push_index(self, repository: str, images: Mapping[tuple[str, str], Sequence[Layer]], *,
                   tag: str | None = None, docker: bool = False) -> PushedIndex:
        """An index (OCI, or a Docker manifest list with ``docker``) with one image per platform."""
        pushed = {p: self.push_image(repository, layers, platform=p, docker=docker) for p, layers in images.items()}
        media_type = DOCKER_LIST if docker else OCI_INDEX
        index = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "manifests": [{"mediaType": image.media_type, "digest": image.digest, "size": image.size,
                           "platform": {"os": p[0], "architecture": p[1]}} for p, image in pushed.items()],
        }).encode()
        digest = self.push_manifest(repository, tag or sha256_digest(index), index, media_type)
        return PushedIndex(repository, digest, media_type, pushed, tag)
