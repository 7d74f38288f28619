"""make install: idempotent, quiet when there is nothing to do, clear when it cannot work."""

from __future__ import annotations

import hashlib
import os
import pwd
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


def test_unknown_distribution_is_named_with_what_to_install(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=arch\nPRETTY_NAME="Arch Linux"\n')
    result = run("--check", env={"PGSEEK_OS_RELEASE": str(os_release), "PGSEEK_PG_MAJOR": "99"})
    assert result.returncode == 1
    assert "unsupported distribution 'arch'" in result.stderr
    assert "install PostgreSQL 99 (server and pg_config in /usr/lib/postgresql/99/bin)" in (
        result.stderr
    )
    assert "pgvector 0.8+, pg_cron, plpython3u yourself" in result.stderr
    assert "then run 'make install' again" in result.stderr  # a target that exists


@pytest.mark.skipif(
    not Path("/usr/lib/postgresql/15/bin/pg_ctl").exists(), reason="needs PostgreSQL 15 here"
)
def test_another_distribution_with_the_server_side_installed_proceeds(tmp_path):
    # This machine has PostgreSQL 15, pgvector, pg_cron and PL/Python: on a system the
    # installer does not know, make install (demo, lint) goes on to .venv and the library.
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=arch\n")
    pylib = tmp_path / "pylib"  # pending there, so the check reaches the last step
    result = run("--check", env={"PGSEEK_OS_RELEASE": str(os_release), "PGSEEK_PYLIB": str(pylib)})
    assert "unsupported" not in result.stderr and result.stderr == "", result.stderr
    assert f"installing in-database Python packages into {pylib}" in result.stdout
    assert "installing postgresql" not in result.stdout  # no apt on such a system


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


def fake_apt_cache(directory: Path, pgvector_candidate: str) -> dict:
    """An environment whose apt-cache offers PGVECTOR_CANDIDATE as the pgvector package."""
    (directory / "apt-cache").write_text(
        "#!/bin/sh\n"
        'case "$*" in *pgvector*) echo "  Installed: (none)";'
        f' echo "  Candidate: {pgvector_candidate}" ;;'
        ' *) echo "  Candidate: (none)" ;; esac\n'
    )
    (directory / "apt-cache").chmod(0o755)
    return {"PATH": f"{directory}:{os.environ['PATH']}", "PGSEEK_PG_MAJOR": "99"}


def test_a_packaged_pgvector_older_than_0_8_is_built_from_source_instead(tmp_path):
    # Ubuntu 24.04's postgresql-16-pgvector is 0.6.0: not good enough, but no reason to stop.
    result = run("--check", env=fake_apt_cache(tmp_path, "0.6.0-1build2"))
    assert (
        "installing pgvector 0.8.x, built from Debian trixie's source"
        " (apt has postgresql-99-pgvector 0.6.0-1build2, older than 0.8)" in result.stdout
    ), result.stdout + result.stderr


def test_a_packaged_pgvector_of_0_8_or_later_is_installed(tmp_path):
    result = run("--check", env=fake_apt_cache(tmp_path, "0.8.1-2.pgdg24.04+1"))
    assert (
        "installing pgvector 0.8.x, from postgresql-99-pgvector 0.8.1-2.pgdg24.04+1"
        in result.stdout
    ), result.stdout + result.stderr


def test_python_older_than_3_11_is_refused(tmp_path):
    # numpy 2.4 / onnxruntime 1.31 / sqlalchemy 2.1 as pinned need 3.11: a 3.10 would
    # fail half-way through pip. A stand-in python that reports 3.10.
    python = tmp_path / "python3.10"
    python.write_text(
        "#!/bin/sh\n"
        'exec python3 -c "import sys; sys.version_info = (3, 10, 12); '
        'exec(sys.argv[1])" "$2"\n'
    )
    python.chmod(0o755)
    pending = run("--check").stdout.splitlines()
    if any("would do: installing" in x and "in-database" not in x for x in pending):
        pytest.skip("the system packages are not installed: the install would stop there first")
    build = tmp_path / "build"
    result = run(
        env={
            "PYTHON": str(python),
            "PGSEEK_VENV": str(tmp_path / "venv"),
            "PGSEEK_BUILD_DIR": str(build),
        }
    )
    assert result.returncode == 1
    assert f"{python} is older than 3.11" in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root")
def test_under_sudo_the_build_directory_is_given_back_to_the_user():
    nobody = pwd.getpwnam("nobody")
    checkout = Path(tempfile.mkdtemp(prefix="pgseek-install-test-", dir="/tmp"))
    try:
        os.chown(checkout, nobody.pw_uid, nobody.pw_gid)
        build = checkout / ".build"
        os_release = checkout / "os-release"
        os_release.write_text("ID=arch\n")  # stops the install early, after the log is made
        env = {
            "PGSEEK_BUILD_DIR": str(build),
            "PGSEEK_OS_RELEASE": str(os_release),
            "PGSEEK_PG_MAJOR": "99",
        }
        sudo = {
            "SUDO_USER": "nobody",
            "SUDO_UID": str(nobody.pw_uid),
            "SUDO_GID": str(nobody.pw_gid),
        }
        assert run(env={**env, **sudo}).returncode == 1
        for path in (build, build / "install.log"):
            assert path.stat().st_uid == nobody.pw_uid, path
        # The user's own next run (make demo) gets past the log to the real problem.
        again = run(env=env, user="nobody")
        assert "unsupported distribution 'arch'" in again.stderr, again.stderr
    finally:
        shutil.rmtree(checkout)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root")
def test_a_log_left_by_an_older_sudo_install_is_named_with_the_fix():
    checkout = Path(tempfile.mkdtemp(prefix="pgseek-install-test-", dir="/tmp"))
    try:
        checkout.chmod(0o777)
        (checkout / "install.log").write_text("")  # root's, mode 644
        result = run(env={"PGSEEK_BUILD_DIR": str(checkout)}, user="nobody")
        assert result.returncode == 1
        assert "install.log is not writable by nobody" in result.stderr, result.stderr
        assert "sudo chown -R nobody" in result.stderr
    finally:
        shutil.rmtree(checkout)


def test_a_failed_venv_rebuild_is_not_taken_for_a_complete_one(tmp_path):
    if any(
        "would do: installing" in x and "in-database" not in x
        for x in run("--check").stdout.splitlines()
    ):
        pytest.skip("the system packages are not installed: the install would stop there first")
    build, venv = tmp_path / "build", tmp_path / "venv"
    build.mkdir()
    # A venv complete for the plain requirement set, as a good install leaves it.
    reqs = [ROOT / "requirements" / f"{n}.txt" for n in ("dev", "deploy", "plpython", "models")]
    digest = hashlib.sha256(b"".join(r.read_bytes() for r in reqs)).hexdigest()
    (build / "venv.stamp").write_text(f"{digest}  -\n")
    # A python that passes the version check and creates a venv whose pip always fails.
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'case "$1" in -c) exit 0 ;; esac\n'
        'if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi\n'
        "echo 'pip: no network' >&2; exit 1\n"
    )
    python.chmod(0o755)
    (venv / "bin").mkdir(parents=True)
    shutil.copy(python, venv / "bin" / "python")
    env = {"PGSEEK_BUILD_DIR": str(build), "PGSEEK_VENV": str(venv), "PYTHON": str(python)}
    assert "creating the Python environment" not in run("--check", env=env).stdout
    # The requirements change (here: the reference set joins), the rebuild fails in pip ...
    failed = run(env={**env, "PGSEEK_WITH_REFERENCE": "1"})
    assert failed.returncode == 1 and "pip install" in failed.stderr, failed.stderr
    # ... and back on the old requirements, the broken venv must still be rebuilt.
    assert "creating the Python environment" in run("--check", env=env).stdout
