"""Tenants: with pgseek.set_tenants(true), a session sees and writes only its tenant's
rows, in every search path (vector, in-database query embedding, BM25, filters, pages)
and in the BM25 statistics; pinned roles cannot step out of their tenant; an application
role names its tenant per transaction and keeps no trace of it afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ACME = [
    ("acme invoice for rocket skates", "invoice"),
    ("acme invoice for a giant magnet", "invoice"),
    ("anvil delivery schedule for the desert", "logistics"),
    ("roadrunner sightings near the canyon", "report"),
]
GLOBEX = [
    ("globex invoice for the doomsday device", "invoice"),
    ("secret volcano lair maintenance plan", "project"),
    ("hammock procurement for the volcano staff", "logistics"),
]


@dataclass
class Login:
    name: str
    url: str

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)


@pytest.fixture
def logins(server, db, conn) -> Iterator[dict[str, Login]]:
    """acme and globex: writers pinned to their tenant; app: a writer pinned to none
    (an application server naming the tenant per transaction); admin."""
    suffix = secrets.token_hex(4)
    made: dict[str, Login] = {}
    with server.connect() as c:
        for key, role in (
            ("acme", "pgseek_writer"),
            ("globex", "pgseek_writer"),
            ("app", "pgseek_writer"),
            ("admin", "pgseek_admin"),
        ):
            name = f"pgseek_test_{key}_{suffix}"
            password = secrets.token_hex(12)
            c.execute(f"create role {name} login password '{password}' in role {role}")
            params = conninfo_to_dict(db.url)
            params.update(user=name, password=password)
            made[key] = Login(name, make_conninfo(**params))
    conn.execute(
        "insert into pgseek.tenant_roles (role_name, tenant) values (%s, 'acme'), (%s, 'globex')",
        (made["acme"].name, made["globex"].name),
    )
    yield made
    with server.connect() as c:
        for login in made.values():
            c.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (login.name,),
            )
            c.execute(f"drop role if exists {login.name}")


def store(login: Login, rows: list[tuple[str, str]]) -> set:
    """Inserts rows as the login (the tenant comes from the column default)."""
    with login.connect() as c:
        return {
            c.execute(
                "insert into pgseek.documents (content, metadata, embedding)"
                " values (%s, jsonb_build_object('kind', %s::text), pgseek.embed(%s)) returning id",
                (content, kind, content),
            ).fetchone()[0]
            for content, kind in rows
        }


@pytest.fixture
def corpus(conn, logins) -> dict[str, set]:
    assert (
        conn.execute("select pgseek.set_tenants(true)").fetchone()[0].startswith("tenants enabled")
    )
    ids = {"acme": store(logins["acme"], ACME), "globex": store(logins["globex"], GLOBEX)}
    conn.execute("select pgseek.refresh_text_stats()")
    return ids


def ids_of(c: psycopg.Connection, sql: str, params=None) -> set:
    return {r[0] for r in c.execute(sql, params)}


def test_rows_carry_the_writers_tenant(conn, corpus):
    tenants = dict(conn.execute("select id, tenant from pgseek.documents").fetchall())
    assert {tenants[i] for i in corpus["acme"]} == {"acme"}
    assert {tenants[i] for i in corpus["globex"]} == {"globex"}


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_every_search_path_returns_only_the_tenants_rows(logins, corpus, tenant):
    own = corpus[tenant]
    with logins[tenant].connect() as c:
        assert ids_of(c, "select id from pgseek.documents") == own
        # Vector search, asking for more rows than the tenant has.
        found = ids_of(c, "select id from pgseek.search_similar(pgseek.embed('invoice'), k => 100)")
        assert found == own
        # Hybrid search with the query embedded in the database (query_embedding NULL),
        # with a client vector, and each branch alone.
        for sql in (
            "select id from pgseek.hybrid_search('invoice volcano canyon', k => 100)",
            "select id from pgseek.hybrid_search('invoice', pgseek.embed('invoice'), k => 100)",
            "select id from pgseek.hybrid_search('invoice', k => 100, mode => 'text')",
            "select id from pgseek.hybrid_search('invoice', k => 100, mode => 'vector')",
            "select id from pgseek.hybrid_search('invoice', k => 100, mode => 'rrf')",
        ):
            assert ids_of(c, sql) <= own, sql
        keyword = ids_of(c, "select id from pgseek.hybrid_search('invoice', mode => 'text')")
        rows = ACME if tenant == "acme" else GLOBEX
        assert len(keyword) == sum(1 for content, _ in rows if "invoice" in content)
        # A metadata filter that other tenants' rows also match.
        filtered = ids_of(
            c,
            "select id from pgseek.hybrid_search('invoice', filter => '{\"kind\": \"invoice\"}')",
        )
        assert filtered and filtered <= own
        assert (
            ids_of(
                c,
                "select id from pgseek.search_similar(pgseek.embed('invoice'),"
                ' filter => \'{"kind": "logistics"}\')',
            )
            <= own
        )
        # Paging one row at a time walks through the tenant's rows and stops there.
        paged = []
        for offset in range(10):
            page = c.execute(
                "select id from pgseek.search_similar(pgseek.embed('invoice'), k => 1,"
                " page_offset => %s)",
                (offset,),
            ).fetchall()
            paged += [r[0] for r in page]
        assert len(paged) == len(own) and set(paged) == own
        hybrid_pages = [
            r[0]
            for offset in range(0, 10, 2)
            for r in c.execute(
                "select id from pgseek.hybrid_search('invoice schedule volcano', k => 2,"
                " page_offset => %s)",
                (offset,),
            )
        ]
        assert set(hybrid_pages) <= own


def test_a_tenant_cannot_write_another_tenants_rows(logins, corpus):
    other = next(iter(corpus["globex"]))
    mine = next(iter(corpus["acme"]))
    with logins["acme"].connect() as c:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            c.execute("insert into pgseek.documents (content, tenant) values ('planted', 'globex')")
        assert caught.value.sqlstate == "42501"
        assert 'new row violates row-level security policy for table "documents"' in str(
            caught.value
        )
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security policy"):
            c.execute("update pgseek.documents set tenant = 'globex' where id = %s", (mine,))
        with pytest.raises(errors.InsufficientPrivilege, match='policy for table "sources"'):
            c.execute(
                "insert into pgseek.sources (content, chunk_tokens, overlap_tokens, tenant)"
                " values ('planted', 64, 8, 'globex')"
            )
        # Other tenants' rows are simply not there to change.
        assert (
            c.execute(
                "update pgseek.documents set content = 'defaced' where id = %s", (other,)
            ).rowcount
            == 0
        )
        assert c.execute("delete from pgseek.documents where id = %s", (other,)).rowcount == 0
        # A pinned role cannot name another tenant.
        c.execute("set pgseek.tenant = 'globex'")
        assert ids_of(c, "select id from pgseek.documents") == corpus["acme"]
    with logins["globex"].connect() as c:
        assert ids_of(c, "select id from pgseek.documents") == corpus["globex"]


def test_a_tenants_bm25_scores_ignore_other_tenants_documents(conn, logins, corpus):
    def acme_scores() -> dict:
        with logins["acme"].connect() as c:
            return dict(
                c.execute(
                    "select id, text_score from pgseek.hybrid_search('invoice skates',"
                    " mode => 'text')"
                ).fetchall()
            )

    before = acme_scores()
    assert set(before) <= corpus["acme"] and before
    # globex writes many documents with the same words; the statistics are refreshed.
    store(
        logins["globex"], [(f"globex invoice number {i} for skates", "invoice") for i in range(30)]
    )
    conn.execute("select pgseek.refresh_text_stats()")
    assert acme_scores() == before
    with logins["acme"].connect() as c:
        assert c.execute("select distinct tenant from pgseek.text_stats").fetchall() == [("acme",)]
        assert c.execute("select tenant, documents from pgseek.text_stats_summary").fetchall() == [
            ("acme", len(ACME))
        ]
        # 'volcano' is only in globex's documents: acme cannot tell it exists.
        assert (
            c.execute("select count(*) from pgseek.text_stats where term = 'volcano'").fetchone()[0]
            == 0
        )
    # One age for the statistics in the metrics (not one per tenant).
    assert conn.execute("select text_stats_age_seconds from pgseek.metrics").fetchone()[0] >= 0
    # Every document's statistics are still there for the owner and admins.
    assert (
        conn.execute(
            "select doc_freq from pgseek.text_stats where tenant = '' and term = 'invoic'"
        ).fetchone()[0]
        == 2 + 1 + 30
    )


def test_a_pinned_login_keeps_its_tenant_whatever_role_it_sets(logins, corpus):
    """SET ROLE to an unpinned role the login belongs to, then naming another tenant,
    changes nothing: the pins of the login (session_user) still apply."""
    with logins["globex"].connect() as c:
        c.execute("set role pgseek_writer")
        c.execute("set pgseek.tenant = 'acme'")
        assert c.execute("select pgseek.current_tenant()").fetchone()[0] == "globex"
        assert ids_of(c, "select id from pgseek.documents") == corpus["globex"]
        changed = c.execute(
            "update pgseek.documents set content = 'tampered' where id = any(%s)",
            (list(corpus["acme"]),),
        )
        assert changed.rowcount == 0
        tenant = c.execute(
            "insert into pgseek.documents (content) values ('planted') returning tenant"
        ).fetchone()[0]
        assert tenant == "globex"


def test_superusers_are_pinned_to_no_tenant(conn, logins, corpus):  # noqa: ARG001 (two pins)
    """pg_has_role() is true for a superuser on every role: pins must not make the owner
    (here a superuser) 'pinned to more than one tenant'."""
    assert conn.execute("select pgseek.current_tenant()").fetchone()[0] is None
    conn.execute("insert into pgseek.documents (content) values ('by the owner')")
    found = ids_of(conn, "select id from pgseek.hybrid_search('invoice volcano canyon', k => 100)")
    assert found == corpus["acme"] | corpus["globex"]


def test_an_application_role_names_the_tenant_per_transaction(logins, corpus):
    with logins["app"].connect() as c:
        # No tenant: nothing visible, nothing writable (fails closed).
        assert ids_of(c, "select id from pgseek.documents") == set()
        assert c.execute("select count(*) from pgseek.hybrid_search('invoice')").fetchone()[0] == 0
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security policy"):
            c.execute("insert into pgseek.documents (content) values ('no tenant')")
        with c.transaction():
            c.execute("select set_config('pgseek.tenant', 'acme', true)")
            assert ids_of(c, "select id from pgseek.documents") == corpus["acme"]
            source = c.execute(
                "select pgseek.ingest(repeat('Acme ships anvils daily. ', 300))"
            ).fetchone()[0]
            tenants = c.execute(
                "select distinct tenant from pgseek.documents where source_id = %s", (source,)
            ).fetchall()
            assert tenants == [("acme",)]
        # The setting ended with the transaction (nothing left for a pooled connection).
        assert c.execute("select current_setting('pgseek.tenant', true)").fetchone()[0] in (
            "",
            None,
        )
        assert ids_of(c, "select id from pgseek.documents") == set()
        with c.transaction():
            c.execute("select set_config('pgseek.tenant', 'globex', true)")
            assert ids_of(c, "select id from pgseek.documents") == corpus["globex"]
            assert c.execute("select count(*) from pgseek.sources").fetchone()[0] == 0


def test_admins_see_and_manage_every_tenant(logins, corpus):
    with logins["admin"].connect() as c:
        assert ids_of(c, "select id from pgseek.documents") == corpus["acme"] | corpus["globex"]
        hits = ids_of(c, "select id from pgseek.hybrid_search('invoice', k => 100)")
        assert hits == corpus["acme"] | corpus["globex"]
        pins = c.execute("select tenant from pgseek.tenant_roles order by 1").fetchall()
        assert pins == [("acme",), ("globex",)]
    with logins["acme"].connect() as c:
        # A tenant sees its own pin only, not the other tenants' names.
        assert c.execute("select tenant from pgseek.tenant_roles").fetchall() == [("acme",)]
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("insert into pgseek.tenant_roles values ('someone', 'globex')")


def test_a_role_pinned_to_two_tenants_is_refused(conn, logins, corpus):
    # acme's login is pinned to acme, and is a member of pgseek_writer, pinned here too.
    conn.execute(
        "insert into pgseek.tenant_roles (role_name, tenant) values ('pgseek_writer', 'globex')"
    )
    refused = pytest.raises(errors.InsufficientPrivilege, match="pinned to more than one tenant")
    with logins["acme"].connect() as c, refused:
        c.execute("select count(*) from pgseek.documents")
    assert corpus


def test_with_tenants_disabled_the_tenant_is_only_a_label(conn, logins, corpus):
    assert (
        conn.execute("select pgseek.set_tenants(false)")
        .fetchone()[0]
        .startswith("tenants disabled")
    )
    with logins["acme"].connect() as c:
        assert ids_of(c, "select id from pgseek.documents") == corpus["acme"] | corpus["globex"]
        assert len(ids_of(c, "select id from pgseek.hybrid_search('invoice', k => 100)")) == 7
    assert (
        conn.execute("select count(*) from pgseek.text_stats where tenant <> ''").fetchone()[0] == 0
    )


def test_through_pgbouncer_transaction_pooling_no_tenant_leaks(bouncer, db, logins, corpus):
    """Many transactions over few server connections, alternating tenants: each sees
    its own rows, and one that names no tenant sees none (SET LOCAL ends with it)."""
    app = logins["app"].name
    with bouncer.connect(db.name) as c:
        for round_ in range(12):
            tenant = ("acme", "globex", None)[round_ % 3]
            with c.transaction():
                c.execute(f"set local role {app}")
                if tenant:
                    c.execute("select set_config('pgseek.tenant', %s, true)", (tenant,))
                seen = ids_of(
                    c, "select id from pgseek.hybrid_search('invoice volcano canyon', k => 100)"
                )
                assert seen == (corpus[tenant] if tenant else set()), (round_, tenant)
