"""make install: idempotent, quiet when there is nothing to do, clear when it cannot work."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pgtest import ROOT

INSTALL = str(ROOT / "scripts" / "install.sh")


def run(*args: str, env: dict | None = None, user: str | None = None, timeout: float = 120):
    cmd = ["bash", INSTALL, *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def test_check_finds_nothing_to_do_after_make_install():
    result = run("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_a_second_install_changes_nothing_and_says_nothing():
    if run("--check").returncode != 0:
        pytest.skip("the machine is not fully installed: run 'make install' first")
    started = time.monotonic()
    result = run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert time.monotonic() - started < 10
    assert run("--check").returncode == 0


def test_unknown_distribution_is_named(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=arch\nPRETTY_NAME="Arch Linux"\n')
    result = run("--check", env={"PGSEEK_OS_RELEASE": str(os_release)})
    assert result.returncode == 1
    assert "unsupported distribution 'arch'" in result.stderr
    assert "pgvector 0.8+, pg_cron and plpython3u" in result.stderr


def test_ubuntu_is_accepted(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=ubuntu\nID_LIKE=debian\n")
    result = run("--check", env={"PGSEEK_OS_RELEASE": str(os_release)})
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root")
def test_without_root_it_says_what_to_do():
    build = Path(tempfile.mkdtemp(prefix="pgseek-install-test-", dir="/tmp"))
    build.chmod(0o777)  # pytest's tmp_path is private to root
    # PostgreSQL 99 is not installed, so the install needs root, which 'nobody' lacks.
    result = run(
        env={"PGSEEK_PG_MAJOR": "99", "PGSEEK_BUILD_DIR": str(build)},
        user="nobody",
    )
    assert result.returncode == 1
    assert "needs root" in result.stderr
    assert "sudo make install" in result.stderr
    shutil.rmtree(build)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to reach the apt step")
def test_missing_postgresql_major_version_is_named(tmp_path):
    result = run(env={"PGSEEK_PG_MAJOR": "99", "PGSEEK_BUILD_DIR": str(tmp_path)}, timeout=300)
    assert result.returncode == 1
    assert "no package postgresql-99" in result.stderr
    assert "PGSEEK_PG_MAJOR" in result.stderr


def test_unknown_option_is_refused():
    result = run("--frobnicate")
    assert result.returncode == 1
    assert "unknown option '--frobnicate'" in result.stderr
