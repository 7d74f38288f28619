"""The Docker image, through testcontainers, where a Docker engine is reachable.

Skipped, with the reason, where there is none (as on pgseek's own CI machine): the
image's logic lives in the same scripts the rest of the suite tests directly.
"""

from __future__ import annotations

import pytest

from pgtest import ROOT


def docker_engine_problem() -> str | None:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # any failure means: no usable engine here
        return f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


pytestmark = pytest.mark.skipif(
    docker_engine_problem() is not None, reason=str(docker_engine_problem())
)


@pytest.fixture(scope="module")
def container():
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    from testcontainers.core.waiting_utils import wait_for_logs

    with (
        DockerImage(path=str(ROOT), tag="pgseek:test") as image,
        DockerContainer(str(image))
        .with_env("POSTGRES_PASSWORD", "test")
        .with_exposed_ports(5432) as c,
    ):
        # The entrypoint restarts the server after init: wait for the second start.
        wait_for_logs(c, r"(?s)ready to accept connections.*ready to accept connections", 180)
        yield c


def test_image_has_the_extensions_and_the_migrated_schema(container):
    import psycopg

    host = container.get_container_host_ip()
    port = container.get_exposed_port(5432)
    with psycopg.connect(f"postgresql://postgres:test@{host}:{port}/pgseek") as conn:
        extensions = {r[0] for r in conn.execute("select extname from pg_extension")}
        assert {"vector", "pg_cron", "plpython3u"} <= extensions
        assert conn.execute("select version_num from pgseek_meta.alembic_version").fetchone()
        assert conn.execute("select count(*) from pgseek.documents").fetchone()[0] == 0
