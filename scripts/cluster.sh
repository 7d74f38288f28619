#!/usr/bin/env bash
# The embedded local cluster: a private PostgreSQL in $PGSEEK_HOME (default
# .pgseek/ in the project), on loopback only, on a non-default port, with pg_cron
# preloaded and memory sized from the machine. Run as the postgres OS user when
# invoked as root (initdb and postgres refuse to run as root).
#
# Usage: scripts/cluster.sh up|down|status|url|destroy
# Environment:
#   PGSEEK_HOME       cluster directory (data/, run/, log/, password)
#   PGSEEK_PORT       TCP port on 127.0.0.1 (55432)
#   PGSEEK_DB         database created for pgseek, also cron.database_name (pgseek)
#                     Both are recorded in data/pgseek.conf by `up`; later commands use
#                     the recorded values (a running server's own port) unless set.
#   PGSEEK_PG_MAJOR   PostgreSQL major version (15)
#   PGSEEK_SHARED_BUFFERS, PGSEEK_WORK_MEM, PGSEEK_MAINTENANCE_WORK_MEM,
#   PGSEEK_EFFECTIVE_CACHE_SIZE   override the computed memory settings
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PGSEEK_PG_MAJOR:-15}"
BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"

die() {
    printf 'cluster: error: %s\n' "$*" >&2
    exit 1
}
say() { printf 'cluster: %s\n' "$*" >&2; }

RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user to run the server as: install postgresql-${PG_MAJOR} ('make install')"
    RUN_AS=(runuser -u postgres --)
fi
as_owner() { "${RUN_AS[@]}" "$@"; }

# The cluster directory must be reachable by the user the server runs as; a
# project cloned under /root is not, so fall back to a directory under /var/tmp.
choose_home() {
    if [ -n "${PGSEEK_HOME:-}" ]; then
        HOME_DIR="$(realpath -m "$PGSEEK_HOME")"
    elif [ ${#RUN_AS[@]} -eq 0 ] || as_owner test -x "$ROOT"; then
        HOME_DIR="$ROOT/.pgseek"
    else
        HOME_DIR="/var/tmp/pgseek-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
    fi
    DATA="$HOME_DIR/data"
    # A socket path holds at most 107 bytes; SHORT_SOCKET_DIR serves deep checkouts.
    SHORT_SOCKET_DIR="/tmp/pgseek-$(printf '%s' "$DATA" | sha256sum | cut -c1-12)"
    LOGFILE="$HOME_DIR/log/postgres.log"
    PWFILE="$HOME_DIR/password"
}
choose_home

[ -x "$BIN/pg_ctl" ] || die "PostgreSQL ${PG_MAJOR} server binaries not found in $BIN: run 'make install' (or set PGSEEK_PG_MAJOR)"

pidfile_pid() { [ -f "$DATA/postmaster.pid" ] && head -n 1 "$DATA/postmaster.pid"; }
# is_this_clusters_server PID: true when PID is a postgres process working in this data
# directory (the postmaster changes into it before it writes postmaster.pid). pg_ctl
# status only asks whether the pid is alive, so after a crash a pid reused by another
# cluster's postmaster passed for this cluster's server (and `down` would have stopped it).
# The cwd is read as the server's user: root may not read another user's (in a container
# without CAP_SYS_PTRACE), and this cluster's server can only run as that user.
is_this_clusters_server() {
    local pid="$1" comm cwd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [ "$comm" = postgres ] || return 1
    cwd="$(as_owner readlink "/proc/$pid/cwd" 2>/dev/null)" || return 1
    [ "$cwd" = "$(readlink -f "$DATA")" ]
}
is_running() { [ -f "$DATA/PG_VERSION" ] && is_this_clusters_server "$(pidfile_pid || true)"; }

# conf_value NAME: the value pgseek.conf records for NAME (empty without one).
conf_value() {
    [ -r "$DATA/pgseek.conf" ] || return 0
    sed -n "s/^$1 = '\{0,1\}\([^']*\)'\{0,1\}\$/\1/p" "$DATA/pgseek.conf" | tail -n 1
}

# settle_settings: PORT, DB and SOCKET_DIR. A running cluster's are its own (the port in
# postmaster.pid, the database in pgseek.conf), whatever the environment says, so that
# `PGSEEK_PORT=55471 make demo` followed by a plain `make psql` reaches that cluster, not
# the default port's; a different PGSEEK_PORT / PGSEEK_DB is reported and ignored. A
# stopped cluster starts with PGSEEK_PORT / PGSEEK_DB when set, else with what it recorded.
settle_settings() {
    PORT="${PGSEEK_PORT:-$(conf_value port)}"
    PORT="${PORT:-55432}"
    DB="${PGSEEK_DB:-$(conf_value cron.database_name)}"
    DB="${DB:-pgseek}"
    if is_running; then
        local port db
        port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
        port="${port:-$(conf_value port)}"
        db="$(conf_value cron.database_name)"
        db="${db:-$DB}"
        [ "$port" = "$PORT" ] ||
            say "warning: the cluster in $HOME_DIR runs on port $port: using it, not PGSEEK_PORT=$PORT ('make db-down' first to move it)"
        [ "$db" = "$DB" ] ||
            say "warning: the cluster in $HOME_DIR was started for database $db: using it, not PGSEEK_DB=$DB ('make db-down' first to change it)"
        PORT="$port" DB="$db"
    fi
    SOCKET_DIR="$HOME_DIR/run"
    if [ $(($(printf '%s/.s.PGSQL.%s' "$SOCKET_DIR" "$PORT" | wc -c))) -gt 107 ]; then
        SOCKET_DIR="$SHORT_SOCKET_DIR"
    fi
}

# The socket directory; in /tmp (shared by everyone) it must be the server user's own
# directory, not a link, and private (psql_local connects as that user).
prepare_socket_dir() {
    as_owner mkdir -p "$SOCKET_DIR"
    [ "$SOCKET_DIR" = "$HOME_DIR/run" ] && return 0
    if [ -L "$SOCKET_DIR" ] || [ "$(stat -c %u "$SOCKET_DIR")" != "$(as_owner id -u)" ]; then
        die "$SOCKET_DIR (the socket directory, as $HOME_DIR/run is too long a path for a socket) belongs to someone else; remove it"
    fi
    as_owner chmod 700 "$SOCKET_DIR"
}
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

url() {
    [ -r "$PWFILE" ] || die "no cluster in $HOME_DIR yet: run 'make db-up'"
    printf 'postgresql://postgres:%s@127.0.0.1:%s/%s\n' "$(cat "$PWFILE")" "$PORT" "$DB"
}

# mem_setting NAME BYTES: prints BYTES as a postgresql.conf value in MB.
mb() { printf '%dMB' $(($1 / 1024 / 1024)); }
clamp() {
    local v=$1 lo=$2 hi=$3
    ((v < lo)) && v=$lo
    ((v > hi)) && v=$hi
    printf '%d' "$v"
}

write_config() {
    local ram cores mib=$((1024 * 1024))
    ram=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
    cores=$(nproc)
    # Vector work wants the HNSW graph in shared_buffers, a large
    # maintenance_work_mem for index builds, and moderate per-sort work_mem.
    local shared_buffers=${PGSEEK_SHARED_BUFFERS:-$(mb "$(clamp $((ram / 4)) $((128 * mib)) $((4096 * mib)))")}
    local effective_cache=${PGSEEK_EFFECTIVE_CACHE_SIZE:-$(mb $((ram * 3 / 4)))}
    local maintenance=${PGSEEK_MAINTENANCE_WORK_MEM:-$(mb "$(clamp $((ram / 8)) $((64 * mib)) $((2048 * mib)))")}
    local work_mem=${PGSEEK_WORK_MEM:-$(mb "$(clamp $((ram / 400)) $((4 * mib)) $((64 * mib)))")}
    local parallel=$(((cores > 1) ? cores - 1 : 1))
    as_owner tee "$DATA/pgseek.conf" >/dev/null <<EOF
# Written by scripts/cluster.sh; regenerated on every 'make db-up'.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
shared_preload_libraries = 'pg_cron'
cron.database_name = '$DB'
cron.use_background_workers = on
max_worker_processes = 32
shared_buffers = $shared_buffers
effective_cache_size = $effective_cache
maintenance_work_mem = $maintenance
work_mem = $work_mem
max_parallel_maintenance_workers = $parallel
max_parallel_workers_per_gather = $parallel
password_encryption = 'scram-sha-256'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

init_cluster() {
    say "creating a new cluster in $HOME_DIR"
    mkdir -p "$HOME_DIR"
    [ ${#RUN_AS[@]} -gt 0 ] && chown postgres: "$HOME_DIR"
    as_owner mkdir -p "$DATA" "$(dirname "$LOGFILE")"
    as_owner chmod 700 "$DATA"
    local password
    password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    (umask 077 && printf '%s\n' "$password" >"$PWFILE")
    local pwtmp
    pwtmp="$(as_owner mktemp)"
    printf '%s\n' "$password" | as_owner tee "$pwtmp" >/dev/null
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$pwtmp" -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$HOME_DIR/initdb.log" 2>&1 ||
        {
            as_owner rm -f "$pwtmp"
            cat "$HOME_DIR/initdb.log" >&2
            die "initdb failed"
        }
    as_owner rm -f "$pwtmp"
    printf "\ninclude 'pgseek.conf'\n" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
}

# Called when this cluster's server is not running (is_running is false): a postmaster.pid
# left by a crash names a pid that is gone, or one reused since by another process. Such a
# file is removed. Only a process of the server's user that cannot be inspected (one
# exiting) is left to PostgreSQL, which refuses to start while the pid is alive.
clear_stale_pidfile() {
    local pidfile="$DATA/postmaster.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(head -n 1 "$pidfile")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -e "/proc/$pid" ]; then
        if [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$(as_owner id -u)" ] &&
            ! as_owner readlink "/proc/$pid/cwd" >/dev/null 2>&1; then
            return 0
        fi
        say "removing a stale postmaster.pid (pid $pid is another process now, not this cluster's server)"
    else
        say "removing a stale postmaster.pid (pid ${pid:-?} is not running)"
    fi
    as_owner rm -f "$pidfile"
}

psql_local() { as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -U postgres "$@"; }

up() {
    if is_running; then
        say "already running on port $PORT ($DATA)"
        return 0
    fi
    if port_in_use; then
        die "port $PORT on 127.0.0.1 is in use by another process (see 'ss -ltnp'); stop it or choose another port with PGSEEK_PORT=..."
    fi
    [ -f "$DATA/PG_VERSION" ] || init_cluster
    prepare_socket_dir
    write_config
    clear_stale_pidfile
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 start >/dev/null; then
        tail -n 20 "$LOGFILE" >&2 || true
        die "the server did not start; its log is $LOGFILE"
    fi
    if [ "$(psql_local -d postgres -tAc "select count(*) from pg_database where datname = '$DB'")" = "0" ]; then
        psql_local -d postgres -c "create database \"$DB\""
    fi
    say "running on 127.0.0.1:$PORT, database $DB (data in $DATA)"
}

down() {
    if ! is_running; then
        say "not running"
        return 0
    fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped"
}

status() {
    if is_running; then
        echo "running: 127.0.0.1:$PORT database $DB"
        echo "data:    $DATA"
        echo "log:     $LOGFILE"
        echo "url:     $(url)"
    else
        echo "stopped (data: $DATA)"
        return 3
    fi
}

destroy() {
    down
    if [ -d "$SHORT_SOCKET_DIR" ] && [ ! -L "$SHORT_SOCKET_DIR" ]; then rm -rf "$SHORT_SOCKET_DIR" || true; fi
    [ -d "$HOME_DIR" ] && rm -rf "$HOME_DIR" && say "removed $HOME_DIR"
    return 0
}

settle_settings

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    url) url ;;
    destroy) destroy ;;
    *) die "usage: $0 up|down|status|url|destroy" ;;
esac
