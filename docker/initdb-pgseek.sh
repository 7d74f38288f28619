#!/bin/sh
# Runs once, when the official image initialises an empty data directory: migrates
# the pgseek database over the entrypoint's temporary server (unix socket).
set -eu
DATABASE_URL="postgresql://${POSTGRES_USER:-postgres}@/${POSTGRES_DB:-pgseek}?host=/var/run/postgresql" \
    /opt/pgseek/venv/bin/python /opt/pgseek/scripts/migrate.py upgrade
