#!/bin/sh
# Starts PgBouncer with pgseek's settings (pgbouncer.ini beside this script, installed
# as $PGBOUNCER_SETTINGS) in front of one PostgreSQL server: writes the effective
# configuration (every database name forwarded to the same database upstream, the
# listen address and port, the auth file) into $PGBOUNCER_RUN_DIR and execs pgbouncer.
#
# Environment:
#   PGBOUNCER_USER, PGBOUNCER_PASSWORD   the login clients use, passed on upstream
#                                        (required; SCRAM both ways)
#   PGBOUNCER_UPSTREAM_HOST (pgseek), PGBOUNCER_UPSTREAM_PORT (5432)
#   PGBOUNCER_LISTEN_ADDR (*), PGBOUNCER_PORT (6432)
#   PGBOUNCER_SETTINGS (/etc/pgbouncer/pgbouncer.ini), PGBOUNCER_RUN_DIR (/var/run/pgbouncer)
#   PGBOUNCER_BINARY (pgbouncer)
set -eu

: "${PGBOUNCER_USER:?set PGBOUNCER_USER (the login clients use)}"
: "${PGBOUNCER_PASSWORD:?set PGBOUNCER_PASSWORD}"
upstream_host="${PGBOUNCER_UPSTREAM_HOST:-pgseek}"
upstream_port="${PGBOUNCER_UPSTREAM_PORT:-5432}"
settings="${PGBOUNCER_SETTINGS:-/etc/pgbouncer/pgbouncer.ini}"
run_dir="${PGBOUNCER_RUN_DIR:-/var/run/pgbouncer}"

# userlist.txt: "user" "password", double quotes inside doubled
quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }
umask 077
printf '%s %s\n' "$(quote "$PGBOUNCER_USER")" "$(quote "$PGBOUNCER_PASSWORD")" \
    >"$run_dir/userlist.txt"

{
    printf ';; Written by %s; the settings come from %s.\n' "$0" "$settings"
    printf '[databases]\n* = host=%s port=%s\n\n' "$upstream_host" "$upstream_port"
    cat "$settings"
    printf '\n;; this instance\n'
    printf 'listen_addr = %s\nlisten_port = %s\n' \
        "${PGBOUNCER_LISTEN_ADDR:-*}" "${PGBOUNCER_PORT:-6432}"
    printf 'unix_socket_dir = %s\npidfile = %s/pgbouncer.pid\n' "$run_dir" "$run_dir"
    printf 'auth_file = %s/userlist.txt\nadmin_users = %s\n' "$run_dir" "$PGBOUNCER_USER"
} >"$run_dir/pgbouncer.ini"

exec "${PGBOUNCER_BINARY:-pgbouncer}" "$run_dir/pgbouncer.ini"
