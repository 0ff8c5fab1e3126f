"""Generate the Python gRPC stubs for the protos in ``proto/``.

Used by ``setup.py`` at build/install time and by the test that proves the
stubs shipped in the package are exactly what the protos produce. Each proto
is compiled under the virtual path of its package directory (``PACKAGES``) so
the generated gRPC module imports its message module by its full name.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

PROTO_DIR = "proto"
# Each proto and the package directory it is compiled under: the generated
# gRPC module imports its message module by that full name.
PACKAGES = {
    "csi.proto": Path("csi_driver") / "csi" / "v1",
    "pluginregistration.proto": Path("csi_driver") / "pluginregistration" / "v1",
}


def generated_names(proto: str, stubs: bool = False) -> tuple[str, ...]:
    stem = proto.removesuffix(".proto")
    names = (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py")
    return names + tuple(name + "i" for name in names) if stubs else names


def generate(repo_root: Path, out_root: Path, stubs: bool = False) -> list[Path]:
    """Compile every proto; return the generated files under ``out_root``.

    With ``stubs``, also write typed ``.pyi`` stubs for the modules with
    mypy-protobuf (a development dependency, for the type check only).
    """
    return [path for proto, package in PACKAGES.items()
            for path in _compile(repo_root, out_root, proto, package, stubs)]


def _compile(repo_root: Path, out_root: Path, proto: str, package: Path, stubs: bool) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency only

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / package).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={package.as_posix()}={(repo_root / PROTO_DIR).as_posix()}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
    ]
    with tempfile.TemporaryDirectory() as plugins:
        if stubs:
            args += [f"--plugin=protoc-gen-mypy={_plugin(plugins, 'main')}", f"--mypy_out={out_root}",
                     f"--plugin=protoc-gen-mypy_grpc={_plugin(plugins, 'grpc')}",
                     f"--mypy_grpc_out={out_root}"]
        args.append((package / proto).as_posix())
        code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    return [out_root / package / name for name in generated_names(proto, stubs)]


def _plugin(directory: str, entry: str) -> str:
    """An executable protoc can run for a mypy-protobuf entry point, with this interpreter."""
    path = os.path.join(directory, f"protoc-gen-{entry}")
    with open(path, "w") as script:
        script.write(f"#!{sys.executable}\nfrom mypy_protobuf.main import {entry}\n{entry}()\n")
    os.chmod(path, stat.S_IRWXU)
    return path


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    with_stubs = "--stubs" in sys.argv[1:]
    targets = [arg for arg in sys.argv[1:] if arg != "--stubs"]
    for path in generate(root, Path(targets[0]) if targets else root, stubs=with_stubs):
        print(os.path.relpath(path, root))
