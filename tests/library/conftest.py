"""Fixtures of the library suite: real OCI registries on loopback.

Each registry process serves the whole session (started on first use); the
function-scoped fixtures hand it to a test with no recorded requests and no
faults, and lift the test's faults afterwards. ``oci_registry`` uses bearer
tokens (anonymous pull except under ``private/``), ``basic_registry`` htpasswd,
``open_registry`` no authentication. See tests/support/oci_registry.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.oci_registry import Auth, OciRegistry


def _session_registry(tmp_path_factory: pytest.TempPathFactory, auth: Auth) -> Iterator[OciRegistry]:
    registry = OciRegistry(tmp_path_factory.mktemp(f"oci-registry-{auth.value}"), auth).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def _token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    yield from _session_registry(tmp_path_factory, Auth.TOKEN)


@pytest.fixture(scope="session")
def _basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    yield from _session_registry(tmp_path_factory, Auth.BASIC)


@pytest.fixture(scope="session")
def _open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    yield from _session_registry(tmp_path_factory, Auth.NONE)


def _fresh(registry: OciRegistry) -> Iterator[OciRegistry]:
    registry.reset()
    yield registry
    registry.reset()


@pytest.fixture
def oci_registry(_token_registry: OciRegistry) -> Iterator[OciRegistry]:
    yield from _fresh(_token_registry)


@pytest.fixture
def basic_registry(_basic_registry: OciRegistry) -> Iterator[OciRegistry]:
    yield from _fresh(_basic_registry)


@pytest.fixture
def open_registry(_open_registry: OciRegistry) -> Iterator[OciRegistry]:
    yield from _fresh(_open_registry)
