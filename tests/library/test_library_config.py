"""The library flags: parsing, environment, defaults and refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from csi_driver.config import ConfigError, load


def test_defaults():
    config = load([], environ={})
    assert config.apm_enabled is True and config.registry_allow_list == ()
    assert config.library_cleanup_delay == 15 * 60
    assert config.library_download_timeout == 90
    assert config.library_max_size == 1 << 30


def test_flags_and_environment():
    config = load(["--library-cleanup-delay=30s", "--library-max-size", "512Mi"],
                  environ={"DD_LIBRARY_DOWNLOAD_TIMEOUT": "1m", "DD_LIBRARY_CLEANUP_DELAY": "1h",
                           "DD_REGISTRY_ALLOW_LIST": "gcr.io/datadoghq, 127.0.0.1:5000"})
    assert config.library_cleanup_delay == 30  # the flag wins over the environment
    assert config.library_download_timeout == 60
    assert config.library_max_size == 512 << 20
    assert config.registry_allow_list == ("gcr.io/datadoghq", "127.0.0.1:5000")
    assert load(["--library-cleanup-delay=0"], environ={}).library_cleanup_delay == 0
    assert load(["--library-max-size=100000"], environ={}).library_max_size == 100000


@pytest.mark.parametrize("argv,words", [
    (["--library-cleanup-delay=soon"], "--library-cleanup-delay: not a duration"),
    (["--library-cleanup-delay=-5s"], "not a duration"),
    (["--library-download-timeout=0"], "above 0"),
    (["--library-download-timeout=2m"], "120s"),
    (["--library-max-size=lots"], "--library-max-size: not a size"),
    (["--library-max-size=0"], "above 0"),
])
def test_bad_values_name_the_flag(argv, words):
    with pytest.raises(ConfigError) as err:
        load(argv, environ={})
    assert words in str(err.value)


def test_help_lists_the_library_flags():
    helptext = subprocess.run([sys.executable, "-m", "csi_driver", "--help"], capture_output=True,
                              text=True, check=True).stdout
    for flag in ("--library-cleanup-delay", "--library-download-timeout", "--library-max-size",
                 "DD_LIBRARY_MAX_SIZE", "default 900s", "default 90s"):
        assert flag in helptext
