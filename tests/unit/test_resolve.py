"""The one-syscall walk refuses what the component walk refuses, and both agree."""

import os

import pytest

from csi_driver import resolve, targets

FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "a" / "link")
    os.symlink("b", tmp_path / "a" / "relative")
    (tmp_path / "a" / "file").write_text("")
    return tmp_path


def _open(path) -> int:
    return os.open(path, FLAGS)


def test_reaches_a_real_directory(tree) -> None:
    root = _open(tree)
    try:
        fd = resolve.open_beneath(root, "a/b/c", FLAGS)
        assert fd is not None
        assert os.path.samestat(os.fstat(fd), os.stat(tree / "a" / "b" / "c"))
        os.close(fd)
    finally:
        os.close(root)


@pytest.mark.parametrize("path", ["a/link", "a/link/x", "a/relative/c", "a/../..", "a/missing",
                                  "a/file"])
def test_refuses_links_escapes_and_what_is_not_a_directory(tree, path) -> None:
    root = _open(tree)
    try:
        assert resolve.open_beneath(root, path, FLAGS) is None
    finally:
        os.close(root)


@pytest.mark.parametrize("fast", [True, False], ids=["openat2", "component walk"])
def test_descend_gives_the_same_answers_either_way(tree, monkeypatch, fast) -> None:
    monkeypatch.setattr(resolve, "_available", fast)
    fd = targets.descend(_open(tree), ["a", "b", "c"], str(tree))
    assert os.path.samestat(os.fstat(fd), os.stat(tree / "a" / "b" / "c"))
    os.close(fd)
    with pytest.raises(targets.Blocked) as blocked:
        targets.descend(_open(tree), ["a", "link", "x"], str(tree))
    assert blocked.value.symlink and blocked.value.path == f"{tree}/a/link"
    with pytest.raises(targets.Blocked) as blocked:
        targets.descend(_open(tree), ["a", "missing"], str(tree))
    assert not blocked.value.symlink and blocked.value.path == f"{tree}/a/missing"
