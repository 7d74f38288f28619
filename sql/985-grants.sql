-- Privileges: what pgseek_reader, pgseek_writer and pgseek_admin (migration 0007) may do,
-- and that PUBLIC may do nothing. Applied after every other file of sql/, in the same
-- transaction, so a function that sql/ re-creates is never visible without its grants
-- and never committed executable by PUBLIC (PostgreSQL grants EXECUTE on every new
-- function to PUBLIC; schema-level default privileges cannot take that away, and
-- changing the installing role's database-wide defaults would also change every
-- function it creates outside pgseek, other extensions' included).
-- Everything is revoked, then granted again: this file is the whole truth. A routine
-- is granted by name (all its overloads), so a changed signature keeps its grants. A new
-- routine or table is granted to nobody until it is listed here (tests/test_roles.py
-- fails until it is: every routine is either granted or listed as internal there).
-- pg_monitor's grants (sql/120-metrics.sql) are left alone.

revoke all on schema pgseek from public;
revoke all on all tables in schema pgseek
from public, pgseek_reader, pgseek_writer, pgseek_admin;
revoke all on all sequences in schema pgseek
from public, pgseek_reader, pgseek_writer, pgseek_admin;

grant usage on schema pgseek to pgseek_reader;

-- Readers search. The search functions run as the caller (SECURITY INVOKER, so that
-- row-level security applies to them), so readers need the tables they read and the
-- helpers they call. With tenants enabled (sql/095-tenants.sql), row security limits
-- these tables to the reader's tenant (tenant_roles: to the reader's own pins).
-- config is readable (search needs its settings; API keys are in provider_secrets,
-- which no role here may read), not writable: a reader cannot point the embedding
-- provider at another URL.
grant select on
pgseek.documents,
pgseek.sources,
pgseek.config,
pgseek.text_stats,
pgseek.text_stats_summary,
pgseek.text_postings,
pgseek.tenant_roles
to pgseek_reader;

-- Writers store documents: directly, or through ingest() (chunked). The triggers that
-- queue embeddings are SECURITY DEFINER (sql/040), so writers get no access to the
-- queue; compute_embeddings() is what sync mode's trigger calls as the writer.
grant insert, update, delete on pgseek.documents, pgseek.sources to pgseek_writer;

-- Admins configure and operate: settings, retention policies, the queue and its
-- failures, the statistics, the purge log and the batch log.
grant update on pgseek.config to pgseek_admin;
grant select, insert, update, delete on
pgseek.retention_policies,
pgseek.tenant_roles,
pgseek.embedding_queue,
pgseek.embedding_dead_letter,
pgseek.text_stats,
pgseek.text_stats_summary
to pgseek_admin;
-- The query-embedding cache: read and pruned (purge_expired), written only by embed()
-- (SECURITY DEFINER): vectors an admin planted would answer every tenant's queries.
grant select, delete on pgseek.query_embeddings to pgseek_admin;
grant select, insert, update, delete on pgseek.purge_log to pgseek_admin;
grant select on pgseek.embedding_batches, pgseek.embedding_status,
pgseek.embedding_failures to pgseek_admin;

-- Routines: those this apply (re-)created, and those the migrations own (used by
-- columns or defaults). A routine this apply did not re-create is stale: the migrate
-- command drops it next, recognising it by its untouched catalog row (a grant would
-- touch it), so it is left alone here.
do $$
declare
    caller_path text := pg_catalog.current_setting('search_path');
    current_routines regprocedure [];
    grant_list record;
    fn regprocedure;
begin
    -- Built-ins only, whatever the migrating session's path; restored at the end.
    perform pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    current_routines := array(
        select p.oid::regprocedure
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = 'pgseek'::regnamespace
            and (
                p.xmin = pg_current_xact_id()::xid
                or exists (
                    select from pg_catalog.pg_depend as d
                    where
                        d.refclassid = 'pg_proc'::regclass and d.refobjid = p.oid
                        and d.classid in ('pg_class'::regclass, 'pg_attrdef'::regclass)
                )
            )
    );
    foreach fn in array current_routines loop
        execute format(
            'revoke all on routine %s from public, pgseek_reader, pgseek_writer, pgseek_admin', fn
        );
    end loop;
    for grant_list in
        select g.role_name, g.routines
        from (
            values
            ('pgseek_reader', array[
                'search_similar', 'hybrid_search', 'check_recall', 'embed', 'similarity', 'check_argument', 'vector_search_plan',
                'similar_query', 'check_search_arguments', 'apply_vector_settings', 'similar_scan', 'nearest_indexed',
                'distance_operator',
                'vector_candidates', 'lexeme_query',
                'any_term_query', 'text_candidates', 'term_frequency', 'bm25_term',
                'or_query',
                -- tenants: row security and the tenant columns' defaults call these
                'current_tenant', 'tenants_enabled', 'stats_tenant'
            ]),
            ('pgseek_writer', array[
                'ingest', 'chunk_text', 'compute_embeddings', 'content_sha256'
            ]),
            ('pgseek_admin', array[
                -- configuration, providers and model changes
                'set_api_key', 'check_embedding_config', 'start_model_change',
                'finish_model_change', 'cancel_model_change', 'vector_index_name',
                'vector_index_ddl', 'set_tenants',
                -- EXPLAIN ANALYZE counts the rows a scan skipped, other tenants' included
                'explain_search',
                -- the pipeline, statistics and monitoring
                'process_embedding_queue', 'run_embedding_worker', 'requeue_failed',
                'refresh_text_stats', 'rebuild_text_postings', 'embedding_status_report',
                -- retention
                'set_retention', 'remove_retention', 'purge_expired', 'purge_lock_key',
                'purge_run_alive', 'schedule_purge_maintenance',
                -- jobs
                'jobs', 'schedule_jobs', 'pause_job', 'resume_job', 'unschedule_job',
                'reload_jobs', 'require_pg_cron', 'require_primary'
            ])
        ) as g (role_name, routines)
    loop
        for fn in
            select p.oid::regprocedure from pg_catalog.pg_proc as p
            where p.oid = any(current_routines::oid []) and p.proname = any(grant_list.routines)
        loop
            execute format('grant execute on routine %s to %I', fn, grant_list.role_name);
        end loop;
    end loop;
    perform pg_catalog.set_config('search_path', caller_path, true);
end
$$;
