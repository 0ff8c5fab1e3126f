#!/usr/bin/env python3
"""Pack a root filesystem directory into a one-layer OCI image-layout tarball.

    oci_layout.py --rootfs DIR --name localhost/e2e/app:1 --out app.tar \
        [--user 65532:65532] [--entrypoint JSON-LIST] [--cmd JSON-LIST] \
        [--env KEY=VALUE ...] [--arch amd64]

The output is what `ctr images import` and `docker load` accept: `oci-layout`,
`index.json` naming the image (containerd reads `io.containerd.image.name`, the
OCI spec's `org.opencontainers.image.ref.name` carries the tag, as containerd's
own exporter writes them), a manifest, a config whose `rootfs.diff_ids` is the
digest of the uncompressed layer, and the gzip-compressed layer.

Everything is reproducible: entries sorted, owned by 0:0, mtime 0, so the same
inputs give byte-identical tarballs. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Strip everything host-specific from a tar entry."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def walk_sorted(root: str):
    """Yield (relative path, full path) of every entry under root, parents first."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root), full


def layer_tar(rootfs: str) -> bytes:
    """The uncompressed layer: every file, directory and symlink of rootfs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, full in walk_sorted(rootfs):
            info = normalized(tar.gettarinfo(full, arcname=rel))
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode):
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            elif stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                tar.addfile(info)
            else:
                raise SystemExit(f"oci_layout: unsupported file type in rootfs: {rel}")
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def image_config(args: argparse.Namespace, diff_id: str) -> dict:
    config: dict = {"Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if args.user:
        config["User"] = args.user
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    config["WorkingDir"] = "/"
    return {
        "created": "1970-01-01T00:00:00Z",
        "architecture": args.arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "oci_layout.py"}],
    }


def tag_of(name: str) -> str:
    """The tag of a reference (the part after the last ':' of its last path element)."""
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def write_layout(out: str, blobs: dict[str, bytes], index: bytes) -> None:
    """Write the layout tarball atomically (temporary file, then rename)."""
    files = {"oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for digest, data in sorted(blobs.items()):
        files["blobs/sha256/" + digest.split(":", 1)[1]] = data
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = normalized(tarfile.TarInfo(directory))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = normalized(tarfile.TarInfo(path))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rootfs", required=True, help="directory packed as the only layer")
    parser.add_argument("--name", required=True, help="full image reference, e.g. localhost/e2e/app:1")
    parser.add_argument("--out", required=True, help="output tarball")
    parser.add_argument("--user", default="", help="config User, e.g. 65532:65532")
    parser.add_argument("--entrypoint", default="", help="config Entrypoint as a JSON list")
    parser.add_argument("--cmd", default="", help="config Cmd as a JSON list")
    parser.add_argument("--env", action="append", help="config Env entry KEY=VALUE (repeatable)")
    parser.add_argument("--arch", default="amd64", help="GOARCH-style architecture")
    args = parser.parse_args(argv)

    layer = layer_tar(args.rootfs)
    layer_gz = gzip_bytes(layer)
    config = canonical_json(image_config(args, sha256(layer)))
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": sha256(layer_gz), "size": len(layer_gz)}],
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": sha256(manifest),
            "size": len(manifest),
            "platform": {"architecture": args.arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": args.name,
                "org.opencontainers.image.ref.name": tag_of(args.name),
            },
        }],
    })
    blobs = {sha256(b): b for b in (layer_gz, config, manifest)}
    write_layout(args.out, blobs, index)
    print(f"{args.out}: {args.name} {sha256(manifest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
