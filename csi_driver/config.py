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
    # Accepted so that manifests written for the reference driver keep
    # working; they configure the single-step instrumentation volume types,
    # which this version does not serve, and have no effect.
    apm_enabled: bool = True
    registry_allow_list: tuple[str, ...] = ()
    kubelet_root_dir: str = "/var/lib/kubelet"
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
                       "directory for the driver's on-node storage (staging mounts on kernels "
                       "before 5.12)"),
    "--apm-enabled": (
        "apm_enabled", parse_bool,
        "single-step instrumentation volume types; accepted for compatibility, no effect in this "
        "version"),
    "--registry-allow-list": (
        "registry_allow_list", parse_list,
        "registries library images may come from; accepted for compatibility, no effect in this "
        "version"),
    "--kubelet-root-dir": (
        "kubelet_root_dir", str, "kubelet root directory; volumes are only mounted under <dir>/pods"),
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
                "kubelet_registration_path"}


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datadog-csi-driver",
        usage="%(prog)s [FLAGS...]\n       %(prog)s sandbox [--serve] [--metrics-port N]",
        description=(
            "Kubernetes CSI node driver that bind-mounts the Datadog Agent's DogStatsD and APM "
            "Unix sockets into pods, so pods under the baseline or restricted Pod Security "
            "Standards can reach the agent without hostPath volumes."
        ),
        epilog=(
            "Every flag can also be set through the environment variable DD_<FLAG_IN_UPPER_SNAKE>, "
            "e.g. DD_CSI_ENDPOINT. NODE_ID sets the node id reported by NodeGetInfo (default: the "
            "host name). 'sandbox' runs a self-contained demo; see 'datadog-csi-driver sandbox -h'."
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
    if config.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--log-level must be debug, info, warning or error, got {config.log_level!r}")
    if not config.node_id:
        raise ConfigError("node id is empty: set NODE_ID")
