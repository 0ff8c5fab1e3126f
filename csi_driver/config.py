"""One typed configuration, read from flags with ``DD_*`` environment fallbacks.

Precedence: command-line flag, then ``DD_<FLAG_IN_UPPER_SNAKE>``, then the
default. Flag names and defaults match the reference driver so manifests and
Helm values written for it keep working.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from csi_driver import DRIVER_NAME, __version__

ENV_PREFIX = "DD_"
# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
UNIX_PATH_MAX = 107
# The kubelet abandons a call after 2 minutes; a publish must answer before.
MAX_DOWNLOAD_TIMEOUT = 110.0
# A publish waiting for the agent's socket answers well before that timeout.
MAX_AGENT_SOCKET_WAIT = 100.0
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; the message says which."""


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"not a boolean: {text!r} (use true or false)")


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range 0-65535: {port}")
    return port


def parse_address(text: str) -> str:
    """An IP address to listen on, or empty for every address."""
    value = text.strip()
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"not an IP address: {text!r} (e.g. 0.0.0.0, 127.0.0.1 or ::; "
                              "empty listens on every address)") from None
    return value


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "k": 1000, "m": 1000**2, "g": 1000**3}


def _number_and_unit(text: str) -> tuple[float, str]:
    value = text.strip().lower()
    digits = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(text) from None
    if number < 0 or number != number:  # NaN compares unequal to itself
        raise ValueError(text)
    return number, value[len(digits):]


def parse_duration(text: str) -> float:
    """Seconds, from "90", "90s", "15m", "1h" or "500ms"."""
    try:
        number, unit = _number_and_unit(text)
        return number * _DURATION_UNITS[unit or "s"]
    except (ValueError, KeyError):
        raise ConfigError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)") from None


def parse_size(text: str) -> int:
    """Bytes, from "1073741824", "512Mi", "1Gi" or "500M" (a trailing "B" is allowed)."""
    try:
        number, unit = _number_and_unit(text)
        unit = unit.removesuffix("b")
        return int(number * (_SIZE_UNITS[unit] if unit else 1))
    except (ValueError, KeyError):
        raise ConfigError(f"not a size: {text!r} (e.g. 512Mi, 1Gi)") from None


def endpoint_path(endpoint: str) -> str:
    """The filesystem path of a ``unix://`` CSI endpoint."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:"):]
    else:
        path = endpoint
    if not path.startswith("/"):
        raise ConfigError(
            f"--csi-endpoint must be a Unix socket such as unix:///csi/csi.sock, got {endpoint!r}"
        )
    return os.path.normpath(path)


@dataclass(frozen=True)
class Config:
    driver_name: str = DRIVER_NAME
    csi_endpoint: str = "unix:///csi/csi.sock"
    apm_host_socket_path: str = "/var/run/datadog/apm.socket"
    dsd_host_socket_path: str = "/var/run/datadog/dsd.socket"
    storage_path: str = "/var/lib/datadog-csi-driver"
    # The single-step instrumentation volume types (DatadogLibrary,
    # DatadogInjectorPreload) and the registries their images may come from.
    apm_enabled: bool = True
    registry_allow_list: tuple[str, ...] = ()
    # A library no volume uses any more stays this long, so that a rollout
    # (old pods go, new pods come) finds it instead of pulling it again.
    library_cleanup_delay: float = 15 * 60.0
    # Below the kubelet's 2-minute call timeout, so the kubelet gets the
    # driver's answer (UNAVAILABLE, retried) instead of its own timeout.
    library_download_timeout: float = 90.0
    library_max_size: int = 1 << 30  # bytes, downloaded and unpacked alike
    kubelet_root_dir: str = "/var/lib/kubelet"
    # How long a publish waits for a missing agent socket (0: it fails at once).
    wait_for_agent_socket: float = 0.0
    # How often socket-file volumes are checked for a socket the agent
    # re-created, to tell their pods with an event (0: never).
    stale_check_interval: float = 60.0
    kubeconfig: str = ""  # for those events; empty: the in-cluster service account
    metrics_port: int = 5000
    metrics_address: str = ""
    kubelet_registration_path: str = ""
    node_id: str = field(default_factory=lambda: os.environ.get("NODE_ID") or socket.gethostname())
    log_level: str = "info"

    @property
    def socket_path(self) -> str:
        return endpoint_path(self.csi_endpoint)

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.kubelet_root_dir, "pods")


# flag name -> (Config field, parser, help). The environment variable is derived
# from the flag name, so the two can never drift apart.
_FLAGS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "--driver-name": ("driver_name", str, "CSI driver name the kubelet knows this plugin by"),
    "--csi-endpoint": ("csi_endpoint", str, "Unix socket the CSI gRPC services listen on"),
    "--apm-host-socket-path": (
        "apm_host_socket_path", str, "host path of the Datadog Agent's APM (trace) socket"),
    "--dsd-host-socket-path": (
        "dsd_host_socket_path", str, "host path of the Datadog Agent's DogStatsD socket"),
    "--storage-path": ("storage_path", str,
                       "directory for the driver's on-node storage: the library cache, the "
                       "injector's preload file, staging mounts on kernels before 5.12"),
    "--apm-enabled": (
        "apm_enabled", parse_bool,
        "serve the single-step instrumentation volume types DatadogLibrary and "
        "DatadogInjectorPreload"),
    "--registry-allow-list": (
        "registry_allow_list", parse_list,
        "comma-separated registries library images may come from, e.g. gcr.io/datadoghq (empty: "
        "any)"),
    "--library-cleanup-delay": (
        "library_cleanup_delay", parse_duration,
        "how long a library no volume uses stays cached before it is deleted (e.g. 15m; 0: at "
        "once)"),
    "--library-download-timeout": (
        "library_download_timeout", parse_duration,
        "time allowed to pull one library image; past it the publish fails with UNAVAILABLE and "
        "the kubelet retries (below its 2-minute call timeout)"),
    "--library-max-size": (
        "library_max_size", parse_size,
        "largest library image accepted, downloaded and unpacked (e.g. 512Mi, 1Gi)"),
    "--kubelet-root-dir": (
        "kubelet_root_dir", str, "kubelet root directory; volumes are only mounted under <dir>/pods"),
    "--wait-for-agent-socket": (
        "wait_for_agent_socket", parse_duration,
        "how long a publish waits for a missing agent socket to appear before it fails with "
        "UNAVAILABLE (at most 100s; 0: it fails at once); the volume attribute "
        "dd.csi.datadog.com/wait-for-agent-socket overrides it per volume"),
    "--stale-check-interval": (
        "stale_check_interval", parse_duration,
        "how often socket-file volumes are checked for a socket the agent re-created, to post an "
        "AgentSocketStale event on their pod (0: never)"),
    "--kubeconfig": (
        "kubeconfig", str,
        "kubeconfig for posting pod events (empty: the pod's service account in a cluster)"),
    "--metrics-port": (
        "metrics_port", parse_port, "port for /metrics, /healthz and /readyz (0 disables)"),
    "--metrics-address": (
        "metrics_address", parse_address,
        "IP address for the metrics and health server (empty: every address, which the "
        "kubelet's probes of the pod IP need)"),
    "--kubelet-registration-path": (
        "kubelet_registration_path", str,
        "register with the kubelet without the registrar sidecar: the CSI socket's path as the "
        "kubelet sees it, e.g. /var/lib/kubelet/plugins/k8s.csi.datadoghq.com/csi.sock (empty: "
        "off)"),
    "--log-level": ("log_level", str, "debug, info, warning or error (LOG_LEVEL also read)"),
}


_PATH_FIELDS = {"apm_host_socket_path", "dsd_host_socket_path", "storage_path", "kubelet_root_dir",
                "kubelet_registration_path", "kubeconfig"}


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datadog-csi-driver",
        usage=("%(prog)s [FLAGS...]\n       %(prog)s check [-n NAMESPACE]... [-o table|json|yaml] [--patch] "
               "[...]\n       %(prog)s sandbox [--serve] [--metrics-port N]"),
        description=(
            "Kubernetes CSI node driver that bind-mounts the Datadog Agent's DogStatsD and APM "
            "Unix sockets into pods, so pods under the baseline or restricted Pod Security "
            "Standards can reach the agent without hostPath volumes."
        ),
        epilog=(
            "Every flag can also be set through the environment variable DD_<FLAG_IN_UPPER_SNAKE>, "
            "e.g. DD_CSI_ENDPOINT. NODE_ID sets the node id reported by NodeGetInfo (default: the "
            "host name). 'check' finds workloads that still reach the agent through hostPath and checks the "
            "installation; see 'datadog-csi-driver check -h'. 'sandbox' runs a self-contained demo; see "
            "'datadog-csi-driver sandbox -h'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    defaults = Config(node_id="-")
    for flag, (attr, _parse, help_text) in _FLAGS.items():
        parser.add_argument(
            flag, dest=attr, default=None, metavar="VALUE",
            help=f"{help_text} (env {env_name(flag)}; default {_shown(getattr(defaults, attr))})",
        )
    return parser


def _shown(default: object) -> str:
    """A default as the help text shows it: what a user would type, or (empty)."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):  # the durations
        return f"{default:g}s"
    if isinstance(default, tuple):
        default = ",".join(default)
    return str(default) if default not in ("", None) else "empty"


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse flags and environment into a validated ``Config``."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    # Typed by each flag's parser in _FLAGS; Config's own fields check the names.
    values: dict[str, Any] = {}
    for flag, (attr, parse, _help) in _FLAGS.items():
        raw = getattr(args, attr)
        source = flag
        if raw is None:
            raw = environ.get(env_name(flag))
            source = env_name(flag)
        if raw is None:
            continue
        try:
            values[attr] = parse(raw)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        if attr in _PATH_FIELDS and isinstance(values[attr], str) and values[attr].startswith("/"):
            values[attr] = os.path.normpath(values[attr])  # tolerate a trailing slash
    if "log_level" not in values and environ.get("LOG_LEVEL"):
        # The reference driver's variable; it spells warning "warn".
        level = environ["LOG_LEVEL"].strip().lower()
        values["log_level"] = "warning" if level == "warn" else level
    node_id = environ.get("NODE_ID") or socket.gethostname()
    config = Config(node_id=node_id, **values)
    validate(config)
    return config


def _check_socket_length(what: str, path: str) -> None:
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise ConfigError(f"{what} path {path!r} is {size} bytes; a Unix socket path can be at "
                          f"most {UNIX_PATH_MAX} bytes (choose a shorter directory)")


def _check_agent_socket_options(config: Config) -> None:
    """Waiting for the agent's socket, and the events about dead ones."""
    if config.wait_for_agent_socket > MAX_AGENT_SOCKET_WAIT:
        raise ConfigError(f"--wait-for-agent-socket must be at most {MAX_AGENT_SOCKET_WAIT:g}s (the "
                          f"kubelet gives up on a call after 120s), got {config.wait_for_agent_socket:g}s")
    if 0 < config.stale_check_interval < 1:
        raise ConfigError(f"--stale-check-interval must be 0 (off) or at least 1s, got "
                          f"{config.stale_check_interval:g}s")
    if config.kubeconfig and not os.path.isfile(config.kubeconfig):
        raise ConfigError(f"--kubeconfig {config.kubeconfig!r} is not a file")


def validate(config: Config) -> None:
    if not config.driver_name:
        raise ConfigError("--driver-name must not be empty")
    _check_socket_length("--csi-endpoint", config.socket_path)  # also checks its form
    paths = [
        ("--apm-host-socket-path", config.apm_host_socket_path),
        ("--dsd-host-socket-path", config.dsd_host_socket_path),
        ("--kubelet-root-dir", config.kubelet_root_dir),
        ("--storage-path", config.storage_path),
    ]
    if config.kubelet_registration_path:
        paths.append(("--kubelet-registration-path", config.kubelet_registration_path))
    for flag, path in paths:
        if not os.path.isabs(path) or os.path.normpath(path) != path or "\0" in path:
            raise ConfigError(f"{flag} must be a normalized absolute path, got {path!r}")
    if config.kubelet_registration_path:
        _check_socket_length("--kubelet-registration-path", config.kubelet_registration_path)
        _check_socket_length("the registration socket (--kubelet-root-dir, --driver-name)",
                             os.path.join(config.kubelet_root_dir, "plugins_registry",
                                          f"{config.driver_name}-reg.sock"))
    if not 0 < config.library_download_timeout <= MAX_DOWNLOAD_TIMEOUT:
        raise ConfigError(f"--library-download-timeout must be above 0 and at most "
                          f"{MAX_DOWNLOAD_TIMEOUT:g}s (the kubelet gives up on a call after 120s), "
                          f"got {config.library_download_timeout:g}s")
    if config.library_max_size <= 0:
        raise ConfigError("--library-max-size must be above 0")
    _check_agent_socket_options(config)
    if config.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--log-level must be debug, info, warning or error, got {config.log_level!r}")
    if not config.node_id:
        raise ConfigError("node id is empty: set NODE_ID")
