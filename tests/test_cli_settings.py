"""A setting that cannot be used is said in one line naming its variable, with exit status 2;
never a Python traceback, and never the value back (a setting may hold a secret)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gpucenter.config import SettingsError, get_settings


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCENTER_", "LANG", "LC_"))}
    return subprocess.run(
        [sys.executable, "-m", "gpucenter.cli", *args],
        env={**clean, "COLUMNS": "400", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_bad_setting_names_its_variable_and_exits_2() -> None:
    done = run_cli("job", "list", GPUCENTER_PORT="eighty-s3cr3t", GPUCENTER_DISPATCHER="pbs")

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "GPUCENTER_PORT: Input should be a valid integer" in done.stderr
    assert "GPUCENTER_DISPATCHER: Input should be 'local', 'slurm' or 'kubernetes'" in done.stderr
    assert "unset them for the defaults" in done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout


def test_the_message_is_in_korean_for_a_korean_user() -> None:
    done = run_cli("job", "list", GPUCENTER_SCHEDULER_NICE="x", LANG="ko_KR.UTF-8")

    assert done.returncode == 2
    assert "설정을 사용할 수 없습니다: GPUCENTER_SCHEDULER_NICE" in done.stderr


def test_get_settings_raises_the_named_error(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCENTER_PORT", "-x")

    with pytest.raises(SettingsError) as raised:
        get_settings()

    assert raised.value.problems.startswith("GPUCENTER_PORT: ")
    monkeypatch.setenv("GPUCENTER_PORT", "8123")
    assert get_settings().port == 8123  # an error is not cached: the corrected value is read
