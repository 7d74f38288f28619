#!/bin/sh
# Runs once, when the official image initialises an empty data directory: migrates
# the pgseek database over the entrypoint's temporary server (unix socket) and, when
# PGSEEK_MONITOR_PASSWORD is set, creates the login role the Prometheus exporter uses
# (PGSEEK_MONITOR_USER, default pgseek_monitor), a member of pg_monitor and nothing
# else: it may read pgseek's metrics views, not the documents.
#
# tests/test_docker.py runs this script against the test server, with PGSEEK_HOME,
# PGSEEK_PYTHON and PGSEEK_DATABASE_URL pointing at the checkout, the .venv and that
# server.
set -eu
home="${PGSEEK_HOME:-/opt/pgseek}"
python="${PGSEEK_PYTHON:-$home/venv/bin/python}"
DATABASE_URL="${PGSEEK_DATABASE_URL:-postgresql://${POSTGRES_USER:-postgres}@/${POSTGRES_DB:-pgseek}?host=/var/run/postgresql}"
export DATABASE_URL

"$python" "$home/scripts/migrate.py" upgrade

if [ -n "${PGSEEK_MONITOR_PASSWORD:-}" ]; then
    psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 \
        -v monitor="${PGSEEK_MONITOR_USER:-pgseek_monitor}" \
        -v password="$PGSEEK_MONITOR_PASSWORD" <<'SQL'
create role :"monitor" login password :'password' in role pg_monitor;
SQL
fi
