"""Registry credentials, and answering a registry's request for them.

Credentials come from ``DD_APM_REGISTRY_AUTH_<n>`` variables, each holding a
``.dockerconfigjson`` document (the chart fills them from pull secrets); they
are matched by registry host. A registry asks for credentials with a 401 and a
``WWW-Authenticate`` challenge: ``Basic`` (send the login on every request) or
``Bearer realm=...,service=...,scope=...`` (get a short-lived token from the
realm, anonymously or with the login, and send that). Tokens are cached per
registry and repository until shortly before they expire.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import grpc

from csi_driver.oci.errors import RegistryError
from csi_driver.oci.transport import Connections, Url

log = logging.getLogger(__name__)

ENV_PREFIX = "DD_APM_REGISTRY_AUTH_"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_MAX_TOKEN_RESPONSE = 1 << 20
# Token lifetime when the token service gives none (the token specification's default).
_DEFAULT_TOKEN_SECONDS = 60.0
# A token is dropped this long before it expires, so that it never expires in flight.
_TOKEN_MARGIN_SECONDS = 10.0
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def registry_key(name: str) -> str:
    """The host[:port] a credentials entry or a reference names, Docker Hub's aliases as one."""
    host = name.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_NAMES else host


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)
    source: str = ""  # the variable it came from, for messages

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def _login(entry: Any, where: str) -> Login:
    """One ``auths`` entry; ValueError (never quoting a secret) when unusable."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"{where}: 'auth' is not base64 of username:password") from None
        if not colon:
            raise ValueError(f"{where}: 'auth' decodes to no username:password pair")
        return Login(username, password, where.split(" ")[0])
    name, secret = entry.get("username"), entry.get("password")
    if not isinstance(name, str) or not isinstance(secret, str) or not name:
        kind = "an identity token" if "identitytoken" in entry or "registrytoken" in entry else "no credentials"
        raise ValueError(f"{where} has {kind}; only username and password (or 'auth') are supported")
    return Login(name, secret, where.split(" ")[0])


def _logins(text: str, source: str) -> dict[str, Login]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{source} is not JSON: it must hold a .dockerconfigjson document") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError(f"{source} has no 'auths' object: it must hold a .dockerconfigjson document")
    found: dict[str, Login] = {}
    for host, entry in auths.items():
        found.setdefault(registry_key(host), _login(entry, f"{source} entry {host!r}"))
    return found


def _variable_order(name: str) -> tuple[int, int | str]:
    suffix = name.removeprefix(ENV_PREFIX)
    return (0, int(suffix)) if suffix.isdigit() else (1, suffix)


class Credentials:
    """Logins by registry host; the first variable (by its number) naming a host wins."""

    def __init__(self, logins: Mapping[str, Login] | None = None, problems: Iterable[str] = ()) -> None:
        self._logins = {registry_key(host): login for host, login in (logins or {}).items()}
        self.problems = tuple(problems)  # unusable variables, for the start-up log

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Credentials:
        logins: dict[str, Login] = {}
        problems: list[str] = []
        names = sorted((n for n in environ if n.startswith(ENV_PREFIX) and n != ENV_PREFIX), key=_variable_order)
        for name in names:
            if not environ[name].strip():
                continue  # an optional secret that is absent
            try:
                for host, login in _logins(environ[name], name).items():
                    logins.setdefault(host, login)
            except ValueError as err:
                problems.append(str(err))
                log.warning("registry credentials ignored: %s", err)
        return cls(logins, problems)

    def login_for(self, registry: str) -> Login | None:
        return self._logins.get(registry_key(registry))

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(sorted(self._logins))

    def __repr__(self) -> str:
        return f"Credentials(registries={list(self.registries)!r})"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic", "bearer", ...
    params: Mapping[str, str]


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"[\s,]*({_TOKEN})(?=\s|,|$)\s*")
# A value is a quoted string or, leniently, anything up to the next comma or space.
_PARAM = re.compile(rf'({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*,?\s*')


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """The challenges of ``WWW-Authenticate`` header values (RFC 9110 syntax; token68 ignored)."""
    challenges: list[Challenge] = []
    for value in values:
        position = 0
        while scheme := _SCHEME.match(value, position):
            position = scheme.end()
            params: dict[str, str] = {}
            while param := _PARAM.match(value, position):
                quoted, plain = param.group(2), param.group(3)
                params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
                position = param.end()
            challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


class TokenCache:
    """Authorization header values by (registry, repository), shared by every pull."""

    def __init__(self, limit: int = 512) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._entries: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            value, until = self._entries.get(key, ("", 0.0))
            return value if time.monotonic() < until else None

    def put(self, key: tuple[str, str], value: str, lifetime: float) -> None:
        with self._lock:
            if len(self._entries) >= self._limit:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= self._limit:
                    self._entries.clear()
            self._entries[key] = (value, time.monotonic() + lifetime - _TOKEN_MARGIN_SECONDS)

    def drop(self, key: tuple[str, str], value: str) -> None:
        """Forget ``value`` (refused by the registry) unless another pull already replaced it."""
        with self._lock:
            if self._entries.get(key, ("", 0.0))[0] == value:
                del self._entries[key]


def denied(connections: Connections, registry: str, login: Login | None) -> RegistryError:
    if login is None:
        return RegistryError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{connections.subject}: {registry} refused anonymous access: give the driver credentials for "
            f"{registry} (a pull secret in apm.pullSecrets, seen as {ENV_PREFIX}<n>), or check the image name")
    return RegistryError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{connections.subject}: {registry} refused the credentials of user {login.username!r} from "
        f"{login.source}: check that pull secret")


def _token_url(connections: Connections, challenge: Challenge, scope: str) -> Url:
    realm = challenge.params.get("realm", "")
    pairs = [("service", challenge.params["service"])] if "service" in challenge.params else []
    pairs.append(("scope", challenge.params.get("scope") or scope))
    query = urlencode(pairs)
    try:
        return Url.parse(realm + ("&" if "?" in realm else "?") + query)
    except ValueError as err:
        raise RegistryError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{connections.subject}: the registry's token service realm {realm[:200]!r} cannot be used: {err}",
        ) from None


def _read_token(connections: Connections, body: bytes | None, host: str) -> tuple[str, float]:
    try:
        document = json.loads(body or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict):
        document = {}
    # "token" per the distribution token specification; "access_token" is its OAuth2 alias.
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not _HEADER_SAFE.fullmatch(token):
        raise RegistryError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"{connections.subject}: the token service at {host} answered without a usable token")
    lifetime = document.get("expires_in")
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = _DEFAULT_TOKEN_SECONDS
    return "Bearer " + token, float(lifetime)


def fetch_token(connections: Connections, challenge: Challenge, registry: str, login: Login | None,
                scope: str) -> tuple[str, float]:
    """An Authorization header value from a Bearer challenge's realm, and its lifetime in seconds."""
    url = _token_url(connections, challenge, scope)
    headers = {"Accept": "application/json"}
    if login is not None:
        headers["Authorization"] = login.basic()
    reply = connections.request("GET", url, headers)
    try:
        if reply.status in (401, 403):
            raise denied(connections, registry, login)
        if reply.status == 429 or reply.status >= 500:
            raise RegistryError(grpc.StatusCode.UNAVAILABLE,
                                f"{connections.subject}: the token service at {url.host} answered HTTP {reply.status}")
        if reply.status != 200:
            raise RegistryError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{connections.subject}: the token service at {url.host} answered HTTP {reply.status}")
        body = reply.read_all(_MAX_TOKEN_RESPONSE)
    finally:
        reply.close()
    return _read_token(connections, body, url.host)


def authorization(connections: Connections, challenges: list[Challenge], registry: str, login: Login | None,
                  scope: str) -> tuple[str, float]:
    """Answer a 401's challenges: a header value for the retried request, and how long it may be reused."""
    for challenge in challenges:
        if challenge.scheme == "bearer" and challenge.params.get("realm"):
            return fetch_token(connections, challenge, registry, login, scope)
    if any(challenge.scheme == "basic" for challenge in challenges):
        if login is None:
            raise denied(connections, registry, None)
        return login.basic(), 3600.0
    offered = ", ".join(sorted({c.scheme for c in challenges})) or "none"
    raise RegistryError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{connections.subject}: {registry} asks for authentication this driver does not support "
        f"(schemes offered: {offered}; supported: Basic, Bearer)")
