#!/usr/bin/env python3
"""The few HTTP calls scripts/e2e-cluster.sh makes, with the standard library only.

    kapi.py free-ports N                         N distinct free TCP ports on 127.0.0.1
    kapi.py http-ok URL [TLS...]                 exit 0 when URL answers 200
    kapi.py node-ready NODE TLS...               exit 0 when the Node's Ready condition is True
    kapi.py untaint NODE TAINT-KEY TLS...        drop the Node's taints with that key

TLS is `--server URL --ca FILE --cert FILE --key FILE` (the admin credentials).
Each check tries once; on failure it exits 1 and says why on stderr (the
caller polls).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import urllib.error
import urllib.request


def free_ports(count: int) -> list[int]:
    """Bind all the sockets at once so the kernel hands out distinct ports."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.ca:
        return None
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    return ctx


def request(url: str, ctx: ssl.SSLContext | None, method: str = "GET", body: object = None,
            content_type: str = "application/json") -> tuple[int, bytes]:
    """(HTTP status, body); HTTP errors are answers too, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def fail(message: str) -> int:
    print(f"kapi: {message}", file=sys.stderr)
    return 1


def http_ok(args: argparse.Namespace, ctx: ssl.SSLContext | None) -> int:
    status, body = request(args.url, ctx)
    return 0 if status == 200 else fail(f"{args.url}: HTTP {status}: {body[:300]!r}")


def node_ready(args: argparse.Namespace, ctx: ssl.SSLContext | None) -> int:
    status, body = request(f"{args.server}/api/v1/nodes/{args.node}", ctx)
    if status != 200:
        return fail(f"node {args.node}: HTTP {status}: {body[:300]!r}")
    conditions = json.loads(body).get("status", {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready and ready.get("status") == "True":
        return 0
    return fail(f"node {args.node} not Ready: {json.dumps(ready) if ready else 'no Ready condition yet'}")


def untaint(args: argparse.Namespace, ctx: ssl.SSLContext | None) -> int:
    url = f"{args.server}/api/v1/nodes/{args.node}"
    status, body = request(url, ctx)
    if status != 200:
        return fail(f"GET node {args.node}: HTTP {status}: {body[:300]!r}")
    taints = json.loads(body).get("spec", {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != args.taint_key]
    if kept == taints:
        return 0
    status, body = request(url, ctx, "PATCH", {"spec": {"taints": kept or None}},
                           "application/merge-patch+json")
    return 0 if status == 200 else fail(f"PATCH node {args.node}: HTTP {status}: {body[:300]!r}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    for name, positional in (("http-ok", ("url",)),
                             ("node-ready", ("node",)),
                             ("untaint", ("node", "taint_key"))):
        p = sub.add_parser(name)
        for arg in positional:
            p.add_argument(arg)
        p.add_argument("--server", default="")
        p.add_argument("--ca", default="")
        p.add_argument("--cert", default="")
        p.add_argument("--key", default="")
    args = parser.parse_args(argv)

    if args.command == "free-ports":
        print(" ".join(map(str, free_ports(args.count))))
        return 0
    ctx = tls_context(args)
    try:
        return {"http-ok": http_ok, "node-ready": node_ready, "untaint": untaint}[args.command](args, ctx)
    except (OSError, ValueError) as err:  # refused, reset, TLS, bad JSON
        return fail(f"{args.command}: {err}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
