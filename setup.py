"""Build hook: generate the gRPC stubs from proto/csi.proto before packaging.

All metadata lives in pyproject.toml; this file only adds the code generation
step so stubs are never committed or edited by hand.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from build_support.protogen import generate


class BuildWithStubs(build_py):
    def run(self):
        # Generated in the source tree so editable installs see them too.
        generate(ROOT, ROOT)
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
