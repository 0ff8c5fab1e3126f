import tomllib
from pathlib import Path

import csi_driver


def test_the_package_reports_the_version_pyproject_declares() -> None:
    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert csi_driver.__version__ == declared
