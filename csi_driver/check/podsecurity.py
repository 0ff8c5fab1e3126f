"""Pod Security Standards: a namespace's levels and a pod template's violations.

The levels come from the namespace labels as the Pod Security admission reads
them: an invalid ``enforce`` level counts as ``restricted``, an invalid ``warn``
level as ``privileged``, an invalid version as ``latest``; without a label the
cluster's default applies, which is ``privileged`` unless the API server's
admission configuration sets another (that configuration, and its exemptions,
cannot be read through the API).

The checks are those of the Baseline and Restricted profiles that concern a
pod spec: host namespaces, privileged and HostProcess containers, capabilities,
``hostPath`` and other volume types, host ports, AppArmor, SELinux, ``/proc``
mount type, seccomp, sysctls, probe and lifecycle hosts, privilege escalation,
running as non-root and as a non-zero user. Checks that came with a later
Kubernetes version apply from that version on. Not covered: the rules of
versions older than 1.23 where they differed, and options that depend on
feature gates (user namespaces relaxing ``procMount``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

LEVELS = ("privileged", "baseline", "restricted")
LATEST = 10**6  # minor version of "latest"
LABEL_PREFIX = "pod-security.kubernetes.io/"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: str  # "latest" or "v1.N"
    source: str  # label | default | invalid label

    @property
    def minor(self) -> int:
        return version_minor(self.version)


@dataclass(frozen=True)
class NamespacePolicy:
    enforce: LevelVersion
    warn: LevelVersion


@dataclass(frozen=True)
class Violation:
    check: str
    level: str  # the lowest level that forbids it
    detail: str


def version_minor(version: str) -> int:
    if version.startswith("v1.") and version[3:].isdigit():
        return int(version[3:])
    return LATEST


def _level_version(labels: Mapping[str, str], mode: str, invalid_level: str) -> LevelVersion:
    level = labels.get(LABEL_PREFIX + mode)
    version = labels.get(f"{LABEL_PREFIX}{mode}-version", "latest")
    if version != "latest" and version_minor(version) == LATEST:
        version = "latest"
    if level is None:
        return LevelVersion("privileged", version, "default")
    if level not in LEVELS:
        return LevelVersion(invalid_level, version, "invalid label")
    return LevelVersion(level, version, "label")


def namespace_policy(labels: Mapping[str, str]) -> NamespacePolicy:
    return NamespacePolicy(enforce=_level_version(labels, "enforce", "restricted"),
                           warn=_level_version(labels, "warn", "privileged"))


# ------------------------------------------------------------------ helpers

def _containers(spec: Obj) -> Iterator[Obj]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _security(obj: Obj) -> Obj:
    return obj.get("securityContext") or {}


def _names(containers: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in containers)


def _bad_containers(spec: Obj, bad: Callable[[Obj], bool]) -> list[str]:
    return [c.get("name", "?") for c in _containers(spec) if bad(c)]


def _is_windows(spec: Obj) -> bool:
    return (spec.get("os") or {}).get("name") == "windows"


# ------------------------------------------------------------ baseline checks

def _host_process(meta: Obj, spec: Obj) -> list[str]:
    def host_process(obj: Obj) -> bool:
        return bool((_security(obj).get("windowsOptions") or {}).get("hostProcess"))

    bad = _bad_containers(spec, host_process)
    if host_process(spec) or bad:
        return ["HostProcess containers " + (_names(bad) or "(pod level)")]
    return []


def _host_namespaces(meta: Obj, spec: Obj) -> list[str]:
    return [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]


def _privileged(meta: Obj, spec: Obj) -> list[str]:
    bad = _bad_containers(spec, lambda c: bool(_security(c).get("privileged")))
    return [f"privileged containers {_names(bad)}"] if bad else []


BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def _added_capabilities(container: Obj) -> list[str]:
    return list((_security(container).get("capabilities") or {}).get("add") or [])


def _capabilities_beyond(spec: Obj, allowed: frozenset[str]) -> list[str]:
    found = []
    for container in _containers(spec):
        extra = [cap for cap in _added_capabilities(container) if cap not in allowed]
        if extra:
            found.append(f'container "{container.get("name", "?")}" adds {", ".join(extra)}')
    return found


def _capabilities_baseline(meta: Obj, spec: Obj) -> list[str]:
    return _capabilities_beyond(spec, BASELINE_CAPABILITIES)


def _host_path_volumes(meta: Obj, spec: Obj) -> list[str]:
    bad = [v.get("name", "?") for v in spec.get("volumes") or [] if "hostPath" in v]
    return [f"hostPath volumes {_names(bad)}"] if bad else []


def _host_ports(meta: Obj, spec: Obj) -> list[str]:
    ports = [str(p["hostPort"]) for c in _containers(spec) for p in c.get("ports") or [] if p.get("hostPort")]
    return [f"hostPort {', '.join(ports)}"] if ports else []


APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor(meta: Obj, spec: Obj) -> list[str]:
    found = []
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value not in ("", "runtime/default") \
                and not value.startswith("localhost/"):
            found.append(f"{key}={value}")
    for obj in (spec, *_containers(spec)):
        profile = (_security(obj).get("appArmorProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"appArmorProfile {profile} ({obj.get('name', 'pod')})")
    return found


def _selinux_allowed_types(minor: int) -> frozenset[str]:
    types = {"", "container_t", "container_init_t", "container_kvm_t"}
    if minor >= 31:
        types.add("container_engine_t")
    return frozenset(types)


def _selinux(meta: Obj, spec: Obj, minor: int) -> list[str]:
    found = []
    for obj in (spec, *_containers(spec)):
        options = _security(obj).get("seLinuxOptions") or {}
        if options.get("type", "") not in _selinux_allowed_types(minor) or options.get("user") \
                or options.get("role"):
            found.append(f"seLinuxOptions {dict(options)} ({obj.get('name', 'pod')})")
    return found


def _proc_mount(meta: Obj, spec: Obj) -> list[str]:
    bad = _bad_containers(spec, lambda c: _security(c).get("procMount") not in (None, "Default"))
    return [f"procMount of containers {_names(bad)}"] if bad else []


def _seccomp_type(obj: Obj) -> str | None:
    profile: str | None = (_security(obj).get("seccompProfile") or {}).get("type")
    return profile


def _seccomp_baseline(meta: Obj, spec: Obj) -> list[str]:
    found = [f"{key}=unconfined" for key, value in (meta.get("annotations") or {}).items()
             if key.startswith(("seccomp.security.alpha.kubernetes.io/pod",
                                "container.seccomp.security.alpha.kubernetes.io/")) and value == "unconfined"]
    found += [f"seccompProfile Unconfined ({obj.get('name', 'pod')})" for obj in (spec, *_containers(spec))
              if _seccomp_type(obj) == "Unconfined"]
    return found


def _allowed_sysctls(minor: int) -> frozenset[str]:
    names = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
             "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}
    if minor >= 27:
        names.add("net.ipv4.ip_local_reserved_ports")
    if minor >= 29:
        names.update({"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                      "net.ipv4.tcp_keepalive_probes"})
    return frozenset(names)


def _sysctls(meta: Obj, spec: Obj, minor: int) -> list[str]:
    bad = [s.get("name", "?") for s in _security(spec).get("sysctls") or []
           if s.get("name") not in _allowed_sysctls(minor)]
    return [f"sysctls {', '.join(bad)}"] if bad else []


def _handler_hosts(handler: Obj | None) -> list[str]:
    handler = handler or {}
    return [host for kind in ("httpGet", "tcpSocket") if (host := (handler.get(kind) or {}).get("host"))]


def _probe_hosts(meta: Obj, spec: Obj) -> list[str]:
    found = []
    for container in _containers(spec):
        lifecycle = container.get("lifecycle") or {}
        handlers = [container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
        hosts = [host for handler in handlers for host in _handler_hosts(handler)]
        if hosts:
            found.append(f'container "{container.get("name", "?")}" probes or hooks host {", ".join(hosts)}')
    return found


# ---------------------------------------------------------- restricted checks

RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})


def _restricted_volumes(meta: Obj, spec: Obj) -> list[str]:
    found = []
    for volume in spec.get("volumes") or []:
        kinds = [key for key in volume if key != "name"]
        if not any(kind in RESTRICTED_VOLUME_TYPES for kind in kinds):
            found.append(f'volume "{volume.get("name", "?")}" of type {", ".join(kinds) or "unknown"}')
    return found


def _allow_privilege_escalation(meta: Obj, spec: Obj) -> list[str]:
    if _is_windows(spec):
        return []
    bad = _bad_containers(spec, lambda c: _security(c).get("allowPrivilegeEscalation") is not False)
    return [f"allowPrivilegeEscalation not false in containers {_names(bad)}"] if bad else []


def _run_as_non_root(meta: Obj, spec: Obj) -> list[str]:
    pod = _security(spec).get("runAsNonRoot")
    found = ["pod sets runAsNonRoot=false"] if pod is False else []
    explicit_false = _bad_containers(spec, lambda c: _security(c).get("runAsNonRoot") is False)
    unset = [] if pod is True else _bad_containers(spec, lambda c: _security(c).get("runAsNonRoot") is None)
    if explicit_false:
        found.append(f"runAsNonRoot=false in containers {_names(explicit_false)}")
    if unset:
        found.append(f"runAsNonRoot not true for containers {_names(unset)}")
    return found


def _run_as_user(meta: Obj, spec: Obj) -> list[str]:
    found = ["pod sets runAsUser=0"] if _security(spec).get("runAsUser") == 0 else []
    bad = _bad_containers(spec, lambda c: _security(c).get("runAsUser") == 0)
    return found + ([f"runAsUser=0 in containers {_names(bad)}"] if bad else [])


_SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")


def _seccomp_restricted(meta: Obj, spec: Obj) -> list[str]:
    found = _seccomp_baseline(meta, spec)
    if _is_windows(spec):
        return found
    pod_set = _seccomp_type(spec) in _SECCOMP_ALLOWED
    unset = [] if pod_set else _bad_containers(spec, lambda c: _seccomp_type(c) is None)
    if unset:
        found.append(f"seccompProfile not RuntimeDefault or Localhost for containers {_names(unset)}")
    return found


def _capabilities_restricted(meta: Obj, spec: Obj) -> list[str]:
    if _is_windows(spec):
        return _capabilities_baseline(meta, spec)
    found = _capabilities_beyond(spec, frozenset({"NET_BIND_SERVICE"}))
    keep = _bad_containers(spec, lambda c: "ALL" not in ((_security(c).get("capabilities") or {}).get("drop") or []))
    if keep:
        found.append(f"capabilities not dropping ALL in containers {_names(keep)}")
    return found


# ------------------------------------------------------------------ registry

PodCheck = Callable[[Obj, Obj], list[str]]


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    run: Callable[[Obj, Obj, int], list[str]]
    since: int = 0  # minor version that introduced it
    replaces: str = ""  # the baseline check it supersedes at this level


def _unversioned(check: PodCheck) -> Callable[[Obj, Obj, int], list[str]]:
    return lambda meta, spec, _minor: check(meta, spec)


CHECKS = (
    Check("hostProcess", "baseline", _unversioned(_host_process)),
    Check("hostNamespaces", "baseline", _unversioned(_host_namespaces)),
    Check("privileged", "baseline", _unversioned(_privileged)),
    Check("capabilities", "baseline", _unversioned(_capabilities_baseline)),
    Check("hostPathVolumes", "baseline", _unversioned(_host_path_volumes)),
    Check("hostPorts", "baseline", _unversioned(_host_ports)),
    Check("appArmor", "baseline", _unversioned(_apparmor)),
    Check("seLinuxOptions", "baseline", _selinux),
    Check("procMount", "baseline", _unversioned(_proc_mount)),
    Check("seccompProfile", "baseline", _unversioned(_seccomp_baseline)),
    Check("sysctls", "baseline", _sysctls),
    Check("hostProbesAndHostLifecycle", "baseline", _unversioned(_probe_hosts), since=34),
    Check("restrictedVolumes", "restricted", _unversioned(_restricted_volumes), replaces="hostPathVolumes"),
    Check("allowPrivilegeEscalation", "restricted", _unversioned(_allow_privilege_escalation)),
    Check("runAsNonRoot", "restricted", _unversioned(_run_as_non_root)),
    Check("runAsUser", "restricted", _unversioned(_run_as_user), since=23),
    Check("seccompProfile", "restricted", _unversioned(_seccomp_restricted), replaces="seccompProfile"),
    Check("capabilities", "restricted", _unversioned(_capabilities_restricted), replaces="capabilities"),
)


def violations(template: Obj, level: str, version: str = "latest") -> list[Violation]:
    """What the ``level`` (at ``version``) forbids in a pod template (``metadata`` and ``spec``)."""
    if level not in ("baseline", "restricted"):
        return []
    minor = version_minor(version)
    active = [c for c in CHECKS if LEVELS.index(c.level) <= LEVELS.index(level) and minor >= c.since]
    replaced = {(c.replaces, "baseline") for c in active if c.replaces}
    meta, spec = template.get("metadata") or {}, template.get("spec") or {}
    return [Violation(check.name, check.level, detail) for check in active
            if (check.name, check.level) not in replaced for detail in check.run(meta, spec, minor)]
