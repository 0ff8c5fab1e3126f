"""Generate the Python gRPC stubs for ``proto/csi.proto``.

Used by ``setup.py`` at build/install time and by the test that proves the
stubs shipped in the package are exactly what the proto produces. The proto is
compiled under the virtual path ``csi_driver/csi/v1/`` so the generated gRPC
module imports its message module by its full package name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROTO_DIR = "proto"
PROTO_FILE = "csi.proto"
PACKAGE_DIR = Path("csi_driver") / "csi" / "v1"
GENERATED = ("csi_pb2.py", "csi_pb2_grpc.py")


def generate(repo_root: Path, out_root: Path) -> list[Path]:
    """Compile the proto; return the generated files under ``out_root``."""
    from grpc_tools import protoc  # build-time dependency only

    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PACKAGE_DIR.as_posix()}={(repo_root / PROTO_DIR).as_posix()}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        (PACKAGE_DIR / PROTO_FILE).as_posix(),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    return [out_root / PACKAGE_DIR / name for name in GENERATED]


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for path in generate(root, Path(sys.argv[1]) if len(sys.argv) > 1 else root):
        print(os.path.relpath(path, root))
