"""``datadog-csi-driver check``: flags, then scan, then print; the exit code says what was found."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from csi_driver.check import document, render
from csi_driver.check.paths import agent_sockets
from csi_driver.check.resources import ApiError
from csi_driver.check.scan import Options, scan
from csi_driver.config import Config, env_name

PROG = "datadog-csi-driver check"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    defaults = Config(node_id="-")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Find workloads that still reach the Datadog Agent's sockets (or a container runtime's) through "
            "hostPath volumes, say what their namespace's Pod Security level does to them and which CSI volume "
            "replaces the hostPath, and check that the driver is installed on every node. Reads the cluster "
            "with get and list requests only; changes nothing."),
        epilog="Exit code: 0 nothing found, 1 findings or installation problems, 2 something could not be read "
               "(the report says what) or the API server could not be reached.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", default=[], metavar="NAMESPACE",
                       help="scan this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="scan every namespace (the default)")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="report format (default table)")
    parser.add_argument("--patch", action="store_true",
                        help="add, per workload, the JSON patch (RFC 6902) that replaces its hostPath volumes "
                             "by the driver's CSI volumes, with the kubectl command applying it")
    parser.add_argument("--kubeconfig", metavar="FILE",
                        help="kubeconfig file (default: in-cluster credentials in a pod, else $KUBECONFIG or "
                             "~/.kube/config)")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current context)")
    for flag, attr, metavar, what in (
            ("--driver-name", "driver_name", "NAME", "CSI driver name the patches use"),
            ("--apm-host-socket-path", "apm_host_socket_path", "PATH", "host path of the agent's APM socket"),
            ("--dsd-host-socket-path", "dsd_host_socket_path", "PATH", "host path of the agent's DogStatsD socket")):
        default = environ.get(env_name(flag)) or getattr(defaults, attr)
        parser.add_argument(flag, dest=attr, default=default, metavar=metavar,
                            help=f"{what} (env {env_name(flag)}; default {getattr(defaults, attr)})")
    parser.add_argument("--driver-namespace", default="datadog-csi-driver", metavar="NAMESPACE",
                        help="namespace of the driver's DaemonSet (default datadog-csi-driver)")
    parser.add_argument("--skip-installation", action="store_true",
                        help="do not check the CSIDriver object, the CSINodes and the DaemonSet")
    parser.add_argument("--page-size", type=_page_size, default=500, metavar="N",
                        help="objects per list request (default 500)")
    return parser


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return size


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    for flag, path in (("--apm-host-socket-path", args.apm_host_socket_path),
                       ("--dsd-host-socket-path", args.dsd_host_socket_path)):
        if not path.startswith("/"):
            parser.error(f"{flag} must be an absolute path, got {path!r}")
    if not args.driver_name:
        parser.error("--driver-name must not be empty")
    options = Options(driver_name=args.driver_name,
                      sockets=agent_sockets(args.dsd_host_socket_path, args.apm_host_socket_path),
                      namespaces=tuple(dict.fromkeys(args.namespaces)), driver_namespace=args.driver_namespace,
                      check_installation=not args.skip_installation)
    from csi_driver.check.kube import KubeApi  # loads the kubernetes client, only here

    try:
        report = scan(KubeApi(args.kubeconfig, args.context, args.page_size), options)
    except ApiError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    doc = document.build(report, with_patch=args.patch)
    formats = {"table": render.as_table, "json": render.as_json, "yaml": render.as_yaml}
    print(formats[args.output](doc))
    return report.exit_code
