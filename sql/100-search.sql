-- Search: search_similar() (vector) and hybrid_search() (vector + BM25 keywords).
--
-- Planner settings (hnsw.ef_search, hnsw.iterative_scan, ivfflat.probes,
-- enable_indexscan) are changed only inside functions that declare them in a SET
-- clause, so PostgreSQL restores the caller's values when the function returns: no
-- session state leaks, also through PgBouncer's transaction pooling.

-- Returns the similarity a distance means for a metric: cosine 1 - distance, inner
-- product the dot product (pgvector's <#> is its negative), l2 1 / (1 + distance).
create or replace function pgseek.similarity(distance double precision, metric text)
returns double precision
language sql
immutable
parallel safe
return case metric
    when 'cosine' then 1 - distance
    when 'inner_product' then -distance
    when 'l2' then 1 / (1 + distance)
end;

-- Raises 22023 (invalid_parameter_value) naming the argument when a check failed.
create or replace function pgseek.check_argument(ok boolean, message text)
returns void
language plpgsql
immutable
parallel safe
as $$
begin
    if ok is not true then
        raise exception '%', message using errcode = 'invalid_parameter_value';
    end if;
end
$$;

-- Returns how to find the nearest documents to a query vector: `nearest`, the query
-- that takes them from the table, nearest first, with id, content, metadata and
-- distance (after an iterative scan, for a WITH ... AS MATERIALIZED: see
-- similar_query()); whether it is an exact scan; how many rows it takes per row asked
-- for; the configured ef_search and probes; and whether rows the index finds may not
-- count (`filtered`: a filter, or row security on documents); and whether `depth` rows
-- may be taken with a plain (not iterative) index scan (`plain`: not filtered, not
-- exact, depth given and at most 1000, ef_search's limit; see search_similar()); and
-- whether the index can be scanned iteratively in strict order (`ordered`: HNSW). The
-- filtering guarantee:
-- when a metadata filter matches at most config.exact_search_max_rows rows, those rows
-- are scanned exactly (GIN finds them, a sort ranks them), so a selective filter still
-- yields every match; otherwise the index is scanned iteratively (pgvector 0.8) until
-- enough rows pass the filter: in relaxed order (vector_candidates()) taking 4 times as
-- many as asked for (relaxed order stops at the first rows that pass) and the caller
-- keeps the nearest, or in strict order with 4 times the ef_search (similar_scan()).
-- The query takes
-- $1 = query vector, $2 = filter, $4 = rows to take. Checks the vector (22023 naming the
-- problem).
--
-- Past exact_search_max_rows the choice is about speed only. An exact scan costs about
-- its matching rows m; an iterative scan visits about 4 * depth / (m / N) rows of N,
-- each some 8 times dearer (measured: bench/report.md, Filtered search). So with depth
-- given, a filter whose estimated m is at most sqrt(32 * depth * N) is scanned exactly
-- too: hybrid_search's 100 candidates under a filter matching 10% of 100K rows. m is
-- estimated from a sample of about 100 pages of the table. exact_search_max_rows = 0
-- turns exact scans for filters off altogether (the index path, e.g. to test it).
create or replace function pgseek.vector_search_plan(
    query_embedding vector, metric text, filter jsonb, depth integer default null,
    out nearest text, out exact boolean, out oversample integer,
    out ef_search integer, out probes integer, out filtered boolean, out plain boolean,
    out ordered boolean
)
language plpgsql
stable
as $$
declare
    c record;
    matching bigint;
    table_rows double precision;
    table_pages double precision;
    sampled double precision;
    hits double precision;
begin
    select config.*, t.relrowsecurity into strict c
    from pgseek.config as config, pg_catalog.pg_class as t
    where t.oid = 'pgseek.documents'::regclass;
    -- Checks inline (IF, not PERFORM check_argument(...)): this runs on every search,
    -- and a valid call takes one test (each is an expression PL/pgSQL sets up again in
    -- every transaction); the chain below finds what is wrong.
    if (metric in ('cosine', 'l2', 'inner_product')
        and vector_dims(query_embedding) = c.embedding_dimensions
        and vector_norm(query_embedding) between 1e-18 and 1e18) is not true then
        if (metric in ('cosine', 'l2', 'inner_product')) is not true then
            raise exception using errcode = 'invalid_parameter_value', message = format(
                'metric must be cosine, l2 or inner_product, not %s', coalesce(metric, 'NULL'));
        elsif query_embedding is null then
            raise exception using errcode = 'invalid_parameter_value',
                message = 'query_embedding must not be NULL';
        elsif vector_dims(query_embedding) <> c.embedding_dimensions then
            raise exception using errcode = 'invalid_parameter_value', message = format(
                'query_embedding has %s dimensions, the documents have %s',
                vector_dims(query_embedding), c.embedding_dimensions);
        elsif metric = 'cosine' and vector_norm(query_embedding) = 0 then
            raise exception using errcode = 'invalid_parameter_value',
                message = 'query_embedding is a zero vector: cosine similarity is undefined for it';
        -- pgvector sums squares in single precision: beyond these norms they overflow or
        -- underflow and distances come out wrong (a cosine of 0 or 1) without an error.
        elsif vector_norm(query_embedding) <> 0
            and vector_norm(query_embedding) not between 1e-18 and 1e18 then
            raise exception using errcode = 'invalid_parameter_value', message = format(
                'query_embedding has norm %s: it must be between 1e-18 and 1e18 (normalize it)',
                vector_norm(query_embedding));
        end if;
    end if;
    -- Without an index for this metric every search is exact.
    exact := c.vector_index = 'none' or c.distance_metric <> metric;
    if filter is not null and not exact then
        execute format(
            'select count(*) from (select from pgseek.documents as d where d.metadata @> $1 '
            'and vector_dims(d.embedding) = %s limit $2) as m',
            c.embedding_dimensions
        ) into matching using filter, c.exact_search_max_rows + 1;
        exact := matching <= c.exact_search_max_rows;
        if not exact and depth is not null and c.exact_search_max_rows > 0 then
            select greatest(t.reltuples, 0), greatest(t.relpages, 1) into table_rows, table_pages
            from pg_catalog.pg_class as t where t.oid = 'pgseek.documents'::regclass;
            execute format(
                'select count(*) filter (where d.metadata @> $1 and vector_dims(d.embedding) = %s),'
                ' count(*) from pgseek.documents as d tablesample system (%s) repeatable (0)',
                c.embedding_dimensions, least(100, 100 * 100 / table_pages)
            ) into hits, sampled using filter;
            exact := sampled > 0 and table_rows > 0
                and (hits / sampled * table_rows) ^ 2 <= 32 * depth * table_rows;
        end if;
    end if;
    oversample := case when filter is not null and not exact then 4 else 1 end;
    ef_search := c.ef_search;
    probes := c.ivfflat_probes;
    -- Whether rows the index finds may not count: a filter, or row security (tenants).
    filtered := filter is not null or c.relrowsecurity;
    plain := not (filtered or exact) and coalesce(depth <= 1000, false);
    -- HNSW scans iteratively in strict order too (IVFFlat in relaxed order only)
    ordered := c.vector_index = 'hnsw';
    nearest := format(
        'select d.id, d.content, d.metadata, '
        '(d.embedding::vector(%1$s) %2$s $1::vector(%1$s))::float8 as distance '
        'from pgseek.documents as d where vector_dims(d.embedding) = %1$s %3$s '
        'order by d.embedding::vector(%1$s) %2$s $1::vector(%1$s) limit $4',
        c.embedding_dimensions,
        pgseek.distance_operator(metric),
        case when filter is not null then 'and d.metadata @> $2' end
    );
end
$$;

-- Returns search_similar()'s statement for a vector_search_plan() that scans exactly or
-- iteratively: the nearest rows, re-sorted by distance and id (an exact scan's ties, an
-- iterative scan's relaxed order), ranked, thresholded and paged. Parameters: $1 = query
-- vector, $2 = filter, $3 = the last row's rank (page_offset + k), $4 = rows to take
-- from the index, $5 = min_similarity, $6 = page_offset. The nearest query is a
-- MATERIALIZED CTE: as a plain subquery the planner trusts the index's order and breaks
-- only ties (an Incremental Sort on a "presorted" distance), wrong after an iterative
-- scan.
create or replace function pgseek.similar_query(nearest text, metric text)
returns text
language sql
immutable
parallel safe
return format(
    'with nearest as materialized (%2$s) '
    'select n.id, n.content, n.metadata, pgseek.similarity(n.distance, %1$L), n.distance, '
    '(row_number() over (order by n.distance, n.id))::integer '
    'from nearest as n '
    'where $5::float8 is null or pgseek.similarity(n.distance, %1$L) >= $5 '
    'order by n.distance, n.id offset $6 limit $3 - $6',
    metric, nearest
);

-- Sets, for the calling function only (it must declare these settings in a SET
-- clause), what a vector scan of `depth` rows needs: an exact scan turns index scans
-- off; an index scan gets ef_search (at least depth) / probes and, when `iterate`,
-- iterative scanning: relaxed order (callers re-sort), or when `ordered` HNSW's strict
-- order, whose rows come nearest first, so a longer scan only adds rows after a shorter
-- one's (IVFFlat has only relaxed order).
create or replace function pgseek.apply_vector_settings(
    exact boolean, depth integer, ef_search integer, probes integer, iterate boolean,
    ordered boolean default false
)
returns void
language plpgsql
volatile
as $$
begin
    if exact then
        perform set_config('enable_indexscan', 'off', true);
        return;
    end if;
    -- One statement: each PERFORM is a query of its own, and this runs on every search.
    perform
        set_config('hnsw.ef_search', least(greatest(ef_search, depth), 1000)::text, true),
        set_config('hnsw.iterative_scan', case
            when not iterate then 'off' when ordered then 'strict_order' else 'relaxed_order'
        end, true),
        set_config('hnsw.max_scan_tuples', '1000000', true),
        set_config('ivfflat.probes', probes::text, true),
        set_config('ivfflat.iterative_scan', case when iterate then 'relaxed_order' else 'off' end, true);
end
$$;

-- Sets up search_similar()'s scan of depth rows (see there) for the calling function
-- (which declares the settings in a SET clause): the same ef_search for every page (the
-- configured or given one; 4 times that under a filter or row security, at most 1000),
-- a plain index scan when plain, no threshold and depth within that ef_search, else an
-- iterative one (HNSW: strict order). Returns that ef_search and whether it iterates.
create or replace function pgseek.similar_scan(
    exact boolean, filtered boolean, plain boolean, ordered boolean, depth integer,
    ef_search integer, probes integer, threshold boolean,
    out scan_ef integer, out iterate boolean
)
language plpgsql
volatile
as $$
begin
    scan_ef := least(ef_search * case when filtered and not exact then 4 else 1 end, 1000);
    iterate := not plain or threshold or depth > scan_ef;
    -- (depth => scan_ef: ef_search is scan_ef whatever the page)
    perform pgseek.apply_vector_settings(exact, scan_ef, scan_ef, probes, iterate, ordered);
end
$$;

-- Returns the depth nearest documents to a query vector (id, distance), nearest first,
-- filtered by metadata containment; see vector_search_plan() for how. force_exact
-- scans without the vector index (the ground truth of check_recall()). Without a filter
-- or row security and at most 1000 deep, the index is scanned plainly through the
-- static pgseek.nearest_indexed() and its rows kept until it is clear there are depth of
-- them, as search_similar() does; otherwise, or when that scan comes up short, the
-- iterative statement.
create or replace function pgseek.vector_candidates(
    query_embedding vector,
    depth integer,
    metric text default 'cosine',
    filter jsonb default null,
    ef_search integer default null,
    probes integer default null,
    force_exact boolean default false
)
returns table (id uuid, distance double precision)
language plpgsql
volatile
rows 100  -- the default depth: the planner then joins its rows by primary key
set enable_indexscan = on
set "hnsw.ef_search" = 40
set "hnsw.iterative_scan" = off
set "hnsw.max_scan_tuples" = 20000
set "ivfflat.probes" = 1
set "ivfflat.iterative_scan" = off
-- one plan for the static statement (see pgseek.nearest_indexed())
set plan_cache_mode = force_generic_plan
as $$
declare
    plan record;
    plain boolean;
    ids uuid [];
    distances double precision [];
begin
    if (depth between 1 and 10000) is not true then  -- (hybrid's candidates: the same)
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'depth must be between 1 and 10000, got %s', coalesce(depth::text, 'NULL'));
    end if;
    plan := pgseek.vector_search_plan(query_embedding, metric, filter, depth);
    ef_search := coalesce(ef_search, plan.ef_search);
    probes := coalesce(probes, plan.probes);
    plain := plan.plain and not force_exact;
    perform pgseek.apply_vector_settings(
        plan.exact or force_exact, depth * plan.oversample, ef_search, probes, not plain
    );
    if plain then
        select array_agg(n.id order by n.i), array_agg(n.distance order by n.i)
        into ids, distances
        from pgseek.nearest_indexed(query_embedding, depth) with ordinality as n (
            id, content, metadata, distance, i
        );
        if cardinality(ids) = depth then
            return query select u.id, u.distance from unnest(ids, distances) as u (id, distance);
            return;
        end if;
        -- Short: fewer rows, or entries of dead rows met; the iterative scan goes on.
        perform pgseek.apply_vector_settings(false, depth, ef_search, probes, true);
    end if;
    return query execute format(
        'with nearest as materialized (%s) '
        'select n.id, n.distance from nearest as n order by n.distance, n.id limit $3',
        plan.nearest
    ) using query_embedding, filter, depth, depth * plan.oversample;
end
$$;

-- Returns the tsquery matching one lexeme exactly as given (no parsing, no stemming).
create or replace function pgseek.lexeme_query(lexeme text)
returns tsquery
language sql
immutable
strict
parallel safe
return ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery;

-- Returns the tsquery matching any lexeme of a text (NULL when it has none, e.g. stop
-- words only): what BM25 candidates match and what snippets highlight.
create or replace function pgseek.any_term_query(query_text text, language regconfig)
returns tsquery
language sql
stable
parallel safe
return (
    select string_agg(pgseek.lexeme_query(t.term)::text, ' | ')::tsquery
    from unnest(tsvector_to_array(to_tsvector(language, coalesce(query_text, '')))) as t (term)
);

-- Returns how often a document contains a lexeme, read from ts_rank: for a one-lexeme
-- query on a tsvector without weights, ts_rank is 0.1 * sum(1 / i^2, i = 1 .. tf)
-- divided by pi^2 / 6, and pi^2 / 6 - sum(1 / i^2, i = 1 .. tf) lies between
-- 1 / (tf + 1) and 1 / tf, so the floor of its inverse is tf.
create or replace function pgseek.term_frequency(fts tsvector, lexeme tsquery)
returns double precision
language sql
immutable
parallel safe
return floor(1::float8 / greatest(
    1.6449340668482264::float8 - ts_rank(fts, lexeme) * 16.449340668482264::float8, 1e-3::float8
));

-- Returns one query term's BM25 contribution to a document's score:
-- idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len)) with k1 = 1.2, b = 0.75,
-- written as idf * 2.2 / (1 + k1 * (...) / tf) so tf is computed once. tf is read from
-- ts_rank (a document without the lexeme gives 0; exact for documents without weights),
-- len is the number of distinct lexemes; avg_length 0 (never measured) means len = avg.
create or replace function pgseek.bm25_term(
    fts tsvector, lexeme tsquery, idf double precision, avg_length double precision
)
returns double precision
language sql
immutable
parallel safe
return coalesce(
    idf * 2.2::float8 / (
        1::float8 + 1.2::float8 * (
            0.25::float8 + 0.75::float8 * coalesce(length(fts) / nullif(avg_length, 0), 1)
        ) / nullif(pgseek.term_frequency(fts, lexeme), 0)
    ),
    0::float8
);

-- Returns the tsquery matching any of the given ones (NULL for none).
create or replace function pgseek.or_query(queries tsquery[])
returns tsquery
language sql
immutable
parallel safe
return (select string_agg(q.query::text, ' | ')::tsquery from unnest(queries) as q (query));

-- Returns the BM25 keyword candidates for query text, best first, at most depth rows:
-- id, score, coverage (the share of the query's lexemes the document contains) and
-- score_bound (the score no document can reach for this query: sum idf(t) * (k1 + 1)).
-- The text is reduced to its lexemes with to_tsvector (any input is valid: no tsquery
-- syntax errors; stop words only gives no rows), a document matches any of them, and
-- its score is the sum of pgseek.bm25_term over them, idf from pgseek.text_stats.
--
-- Without a filter the documents are not read: pgseek.text_postings (sql/015) holds tf
-- and length per (lexeme, document), and one aggregate over its primary key scores
-- every document containing a query term. With a metadata filter the documents are
-- read (the GIN indexes of fts and metadata find them), with pruning:
-- exact top-depth with less work (MaxScore, Turtle and Flood 1995): a term adds at most
-- idf * (k1 + 1) to a score. A first pass scores the documents containing the query's
-- rarest terms; when it finds depth of them, the depth-th score theta is a lower bound
-- for the final depth-th score, so the commonest terms whose bounds sum to less than
-- theta cannot lift a document that has none of the other terms into the result: the
-- second pass scores only documents containing one of those other terms. A query of
-- common words (matching a large share of the table) then touches far fewer rows.
create or replace function pgseek.text_candidates(
    query_text text, depth integer, filter jsonb default null, language regconfig default 'english'
)
returns table (
    id uuid, score double precision, coverage double precision, score_bound double precision
)
language plpgsql
stable
rows 100
as $$
declare
    terms text [];  -- the query's lexemes, rarest (highest idf) first
    lexemes tsquery [];
    idfs double precision [];
    frequencies bigint [];
    corpus_size double precision;
    avg_length double precision;
    bound double precision;
    scored text;  -- the query scoring the documents matching $1, best first
    rare integer := 0;  -- the first pass's terms: terms[1:rare]
    seen bigint := 0;
    theta double precision;
    found bigint;
    common integer := 0;  -- terms[n - common + 1:n] cannot make a document by themselves
    spent double precision := 0;
    n integer;
begin
    terms := tsvector_to_array(to_tsvector(language, coalesce(query_text, '')));
    n := cardinality(terms);
    if n = 0 then
        return;
    end if;
    select s.documents, s.avg_length into corpus_size, avg_length
    from pgseek.text_stats_summary as s
    where s.tenant = (select pgseek.stats_tenant());
    if corpus_size is null or corpus_size = 0 then  -- never refreshed: estimate
        corpus_size := greatest((select c.reltuples from pg_catalog.pg_class as c
            where c.oid = 'pgseek.documents'::regclass), 1);
        avg_length := 0;
    end if;
    select
        array_agg(q.term order by q.idf desc, q.term),
        array_agg(pgseek.lexeme_query(q.term) order by q.idf desc, q.term),
        array_agg(q.idf order by q.idf desc, q.term),
        array_agg(q.frequency order by q.idf desc, q.term),
        sum(q.idf) * 2.2
    into terms, lexemes, idfs, frequencies, bound
    from (
        select
            u.term,
            coalesce(s.doc_freq, 0) as frequency,
            ln(1 + (corpus_size - coalesce(s.doc_freq, 1) + 0.5)
                / (coalesce(s.doc_freq, 1) + 0.5)) as idf
        from unnest(terms) as u (term)
        left join pgseek.text_stats as s
            on u.term = s.term and s.tenant = (select pgseek.stats_tenant())
    ) as q;
    if filter is null then
        -- The postings' primary key alone: every document containing a query term,
        -- scored in one aggregate, no page of pgseek.documents read.
        return query
        select
            p.document_id,
            sum(q.idf * 2.2::float8 / (
                1::float8 + 1.2::float8 * (
                    0.25::float8 + 0.75::float8 * coalesce(p.doc_length / nullif(avg_length, 0), 1)
                ) / p.tf
            )),
            count(*)::float8 / n,
            bound
        from unnest(terms, idfs) as q (term, idf)
        inner join pgseek.text_postings as p on q.term = p.term
        group by p.document_id
        order by 2 desc, 1
        limit depth;
        return;
    end if;
    scored := format(
        'select d.id, d.fts, %s as score from pgseek.documents as d '
        'where d.fts @@ $1 %s order by score desc, d.id limit $5',
        (select string_agg(format('pgseek.bm25_term(d.fts, $2[%1$s], $3[%1$s], $4)', i), ' + ')
            from generate_series(1, n) as i),
        case when filter is not null then 'and d.metadata @> $6' end
    );
    -- The first pass: the rarest terms that, by their document frequencies, find depth
    -- documents; worth it only when some commoner terms are left out.
    while rare < n and seen < depth loop
        rare := rare + 1;
        seen := seen + frequencies[rare];
    end loop;
    if rare < n then
        execute format('select min(c.score), count(*) from (%s) as c', scored)
        into theta, found
        using pgseek.or_query(lexemes[1:rare]), lexemes, idfs, avg_length, depth, filter;
        if found = depth then
            while common < n - 1 and spent + idfs[n - common] * 2.2 < theta loop
                spent := spent + idfs[n - common] * 2.2;
                common := common + 1;
            end loop;
        end if;
        raise debug 'pgseek.text_candidates: first pass over % of % terms found % rows, '
            'theta %; % commonest terms left out', rare, n, found, theta, common;
    end if;
    return query execute format(
        'select c.id, c.score, (select count(*) from unnest($2) as l (lexeme) '
        'where c.fts @@ l.lexeme)::float8 / %s, $7 from (%s) as c '
        'order by c.score desc, c.id',
        n, scored
    ) using pgseek.or_query(lexemes[1:n - common]), lexemes, idfs, avg_length, depth, filter,
        bound;
end
$$;

-- Raises 22023 (invalid_parameter_value) naming the argument when one of
-- search_similar()'s (and explain_search()'s) is out of range; hybrid_search() checks its
-- k, page_offset, filter and min_similarity here too. The vector itself is checked by
-- vector_search_plan(). One IF chain (a PERFORM per check is a query each).
create or replace function pgseek.check_search_arguments(
    k integer, page_offset integer, filter jsonb, ef_search integer, probes integer,
    min_similarity double precision
)
returns void
language plpgsql
immutable
parallel safe
as $$
begin
    if (k between 1 and 1000) is not true then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'k must be between 1 and 1000, got %s', coalesce(k::text, 'NULL'));
    elsif (page_offset between 0 and 10000) is not true then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'page_offset must be between 0 and 10000, got %s', coalesce(page_offset::text, 'NULL'));
    elsif jsonb_typeof(filter) <> 'object' then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'filter must be a JSON object, not %s', jsonb_typeof(filter));
    elsif ef_search not between 1 and 1000 then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'ef_search must be between 1 and 1000, got %s', ef_search);
    elsif probes not between 1 and 32768 then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'probes must be between 1 and 32768, got %s', probes);
    elsif min_similarity not between '-Infinity' and 'Infinity' then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'min_similarity must be a finite number, got %s', min_similarity);
    end if;
end
$$;

-- Returns the k documents nearest to query_embedding, best first: id, content,
-- metadata, similarity (see pgseek.similarity), distance (the pgvector operator's
-- value) and rank. With a filter (metadata containment), exactly k rows come back
-- whenever k rows match (see vector_search_plan). ef_search / probes override
-- pgseek.config for this call. page_offset skips that many results.
--
-- Without a filter, threshold or row security (tenants) every row the index finds is a
-- result, so the index is scanned plainly, not iteratively (pgvector's iterative mode
-- keeps every element it visits for later batches), by static statements over
-- pgseek.nearest_indexed() (sql/020-vector-index.sql), planned once per session. A plain
-- scan yields at most its ef_search nearest index entries, and entries of deleted rows
-- not yet vacuumed (or of rows not yet visible) among them can leave it short of k +
-- page_offset rows: then the search is made again with the iterative scan, which goes
-- on past them. (With a threshold, a short page is the common case and could not tell a
-- cut from a short scan: iterative.)
--
-- Pages: every page of a search (the same query, k, filter and settings) is a slice of
-- one scan. The plan (exact or index) is chosen for k, not k + page_offset, and the
-- index is scanned with the same ef_search on every page (the configured one; under a
-- filter or row security 4 times that, at most 1000: more of the nearest rows pass),
-- plainly while k + page_offset is at most that ef_search, else iteratively in HNSW's
-- strict order, whose rows come nearest first and begin with the plain scan's rows: a
-- deeper page only sees rows after a shallower one's, so pages never overlap or skip
-- a row. (IVFFlat scans iteratively in relaxed order only: its deeper pages under a
-- filter may differ; its rows are taken 4 times over and re-sorted.)
create or replace function pgseek.search_similar(
    query_embedding vector,
    k integer default 10,
    metric text default 'cosine',
    min_similarity double precision default null,
    filter jsonb default null,
    ef_search integer default null,
    probes integer default null,
    page_offset integer default 0
)
returns table (
    id uuid,
    content text,
    metadata jsonb,
    similarity double precision,
    distance double precision,
    rank integer
)
language plpgsql
volatile
set enable_indexscan = on
set "hnsw.ef_search" = 40
set "hnsw.iterative_scan" = off
set "hnsw.max_scan_tuples" = 20000
set "ivfflat.probes" = 1
set "ivfflat.iterative_scan" = off
-- one plan for the static statements (see pgseek.nearest_indexed())
set plan_cache_mode = force_generic_plan
as $$
declare
    plan record;
    scan record;
    depth integer;
    ids uuid [];
    contents text [];
    metadatas jsonb [];
    distances double precision [];
begin
    perform pgseek.check_search_arguments(k, page_offset, filter, ef_search, probes, min_similarity);
    depth := k + page_offset;
    plan := pgseek.vector_search_plan(query_embedding, metric, filter, k);
    probes := coalesce(probes, plan.probes);
    scan := pgseek.similar_scan(plan.exact, plan.filtered, plan.plain, plan.ordered, depth,
        coalesce(ef_search, plan.ef_search), probes, min_similarity is not null);
    if not scan.iterate then
        -- Static statements: PL/pgSQL keeps their plans, nothing is parsed or planned
        -- per call. The rows are kept until it is clear there are enough of them.
        select
            array_agg(n.id order by n.i), array_agg(n.content order by n.i),
            array_agg(n.metadata order by n.i), array_agg(n.distance order by n.i)
        into ids, contents, metadatas, distances
        from pgseek.nearest_indexed(query_embedding, depth) with ordinality as n (
            id, content, metadata, distance, i
        );
        if cardinality(ids) = depth then
            return query
            select u.id, u.content, u.metadata, pgseek.similarity(u.distance, metric),
                u.distance, u.i::integer
            from unnest(ids, contents, metadatas, distances) with ordinality as u (
                id, content, metadata, distance, i
            )
            offset page_offset;
            return;
        end if;
        -- Short: the table holds fewer rows, or the plain scan met entries of dead
        -- rows. The iterative scan goes on past them.
        perform pgseek.apply_vector_settings(false, scan.scan_ef, scan.scan_ef, probes, true, plan.ordered);
    end if;
    return query execute pgseek.similar_query(plan.nearest, metric)
    using query_embedding, filter, depth,
        depth * case when plan.ordered then 1 else plan.oversample end,  -- rows taken
        min_similarity, page_offset;
end
$$;

-- Hybrid search: fuses the vector candidates and the BM25 keyword candidates (each
-- `candidates` deep, default 100, at least k) and returns the best k: id, content,
-- metadata, score, and why: vector_rank / text_rank (1-based, NULL when that branch did
-- not find the row), vector_similarity and text_score (BM25). Modes:
--   convex    (the default) vw * v + tw * t where v is the similarity min-max
--             normalized over the vector candidates (exact for keyword-only rows,
--             clipped to [0, 1]) and t the BM25 score divided by the query's bound
--             (pgseek.text_candidates) times the share of query terms the row contains:
--             a weak keyword match stays weak instead of being stretched to 1
--   rrf       weighted Reciprocal Rank Fusion:
--             vw / (rrf_k + vector_rank) + tw / (rrf_k + text_rank)
--   weighted  vw * v + tw * t of min-max normalized scores over the candidates
--   dbsf      like weighted, normalized by mean +- 3 sd (distribution-based score fusion)
--   vector, text  one branch only, for comparison
-- query_embedding NULL: query_text is embedded in the database (cached).
create or replace function pgseek.hybrid_search(
    query_text text,
    query_embedding vector default null,
    k integer default 10,
    filter jsonb default null,
    mode text default 'convex',
    vector_weight double precision default 0.7,
    text_weight double precision default 0.3,
    rrf_k integer default 60,
    candidates integer default null,
    min_similarity double precision default null,
    language regconfig default 'english',
    page_offset integer default 0,
    snippets boolean default false
)
returns table (
    id uuid,
    content text,
    metadata jsonb,
    score double precision,
    vector_rank integer,
    text_rank integer,
    vector_similarity double precision,
    text_score double precision,
    snippet text
)
language plpgsql
volatile
as $$
declare
    depth integer;
    metric text := (select c.distance_metric from pgseek.config as c);
    has_text boolean := query_text is not null and query_text ~ '[^[:space:]]';
begin
    -- Checks inline (IF, not PERFORM check_argument(...)): each PERFORM is a query.
    if (mode in ('convex', 'rrf', 'weighted', 'dbsf', 'vector', 'text')) is not true then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'mode must be convex, rrf, weighted, dbsf, vector or text, not %s',
            coalesce(mode, 'NULL'));
    end if;
    -- k, page_offset, filter and min_similarity: the same checks as search_similar's
    perform pgseek.check_search_arguments(k, page_offset, filter, null, null, min_similarity);
    if (vector_weight between 0 and 1 and text_weight between 0 and 1) is not true then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'vector_weight and text_weight must be between 0 and 1, got %s and %s',
            coalesce(vector_weight::text, 'NULL'), coalesce(text_weight::text, 'NULL'));
    elsif vector_weight + text_weight = 0 then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'vector_weight and text_weight must not both be 0';
    elsif (rrf_k between 1 and 10000) is not true then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'rrf_k must be between 1 and 10000, got %s', coalesce(rrf_k::text, 'NULL'));
    elsif candidates not between 1 and 10000 then
        raise exception using errcode = 'invalid_parameter_value', message = format(
            'candidates must be between 1 and 10000, got %s', candidates);
    elsif not (has_text or (query_embedding is not null and mode <> 'text')) then
        raise exception using errcode = 'invalid_parameter_value',
            message = 'query_text must not be empty (or pass query_embedding for a vector search)';
    end if;
    -- Not 2 * k: the candidates, and so every score, must not depend on k (a page of 10
    -- and a page of 100 rank alike); at least k, or the page could not be filled.
    depth := greatest(coalesce(candidates, 100), k);
    -- Text mode runs no vector search, but a query vector still gives vector_similarity:
    -- the same checks (dimensions, zero, norm), or it comes out NaN.
    if mode = 'text' and query_embedding is not null then
        perform pgseek.vector_search_plan(query_embedding, metric, null);
    end if;
    if mode <> 'text' and query_embedding is null then
        query_embedding := pgseek.embed(query_text);
    end if;
    return query
    with vector_hits as (
        select v.id, v.distance, row_number() over (order by v.distance, v.id) as r
        from pgseek.vector_candidates(query_embedding, depth, metric, filter) as v
        where mode <> 'text'
    ),
    text_hits as (
        select
            t.id, t.score, t.coverage, t.score_bound,
            row_number() over (order by t.score desc, t.id) as r
        from pgseek.text_candidates(query_text, depth, filter, language) as t
        where mode <> 'vector' and has_text
    ),
    hits as (
        select
            coalesce(v.id, t.id) as id,
            v.r as vr,
            t.r as tr,
            pgseek.similarity(v.distance, metric) as vs,
            t.score as ts,
            t.coverage * t.score / nullif(t.score_bound, 0) as tb,
            case when v.id is null and mode = 'convex' then (  -- a keyword-only row
                select pgseek.similarity(case metric
                    when 'cosine' then x.embedding <=> query_embedding
                    when 'l2' then x.embedding <-> query_embedding
                    else x.embedding <#> query_embedding
                end, metric)
                from pgseek.documents as x
                where x.id = t.id and vector_dims(x.embedding) = vector_dims(query_embedding)
            ) end as vx
        from vector_hits as v full join text_hits as t on v.id = t.id
    ),
    spread as (
        select
            min(h.vs) as v_min, max(h.vs) as v_max, avg(h.vs) as v_mean,
            stddev_pop(h.vs) as v_sd, min(h.ts) as t_min, max(h.ts) as t_max,
            avg(h.ts) as t_mean, stddev_pop(h.ts) as t_sd
        from hits as h
    ),
    fused as (
        select
            h.*,
            case mode
                when 'convex' then
                    vector_weight * coalesce(least(1, greatest(0,
                        (coalesce(h.vs, h.vx) - s.v_min) / nullif(s.v_max - s.v_min, 0))),
                        case when coalesce(h.vs, h.vx) is null then 0 else 1 end)
                    + text_weight * coalesce(h.tb, 0)
                when 'rrf' then coalesce(vector_weight / (rrf_k + h.vr), 0)
                    + coalesce(text_weight / (rrf_k + h.tr), 0)
                when 'weighted' then
                    vector_weight * coalesce((h.vs - s.v_min) / nullif(s.v_max - s.v_min, 0),
                        case when h.vs is null then 0 else 1 end)
                    + text_weight * coalesce((h.ts - s.t_min) / nullif(s.t_max - s.t_min, 0),
                        case when h.ts is null then 0 else 1 end)
                when 'dbsf' then
                    vector_weight * coalesce(least(1, greatest(0,
                        (h.vs - s.v_mean + 3 * s.v_sd) / nullif(6 * s.v_sd, 0))),
                        case when h.vs is null then 0 else 1 end)
                    + text_weight * coalesce(least(1, greatest(0,
                        (h.ts - s.t_mean + 3 * s.t_sd) / nullif(6 * s.t_sd, 0))),
                        case when h.ts is null then 0 else 1 end)
                when 'vector' then h.vs
                else h.ts
            end as fused_score
        from hits as h, spread as s
    )
    select
        d.id,
        d.content,
        d.metadata,
        f.fused_score,
        f.vr::integer,
        f.tr::integer,
        row_vector.similarity,
        f.ts,
        case when snippets then
            ts_headline(language, d.content, pgseek.any_term_query(query_text, language),
                'MaxFragments=2, MinWords=12, MaxWords=30')
        end
    from fused as f
    inner join pgseek.documents as d on f.id = d.id
    -- every row's vector_similarity (keyword-only rows' too): what min_similarity floors
    cross join lateral (
        select coalesce(f.vs, f.vx,
            case when vector_dims(d.embedding) = vector_dims(query_embedding) then
                pgseek.similarity(case metric
                    when 'cosine' then d.embedding <=> query_embedding
                    when 'l2' then d.embedding <-> query_embedding
                    else d.embedding <#> query_embedding
                end, metric)
            end) as similarity
    ) as row_vector
    where min_similarity is null or row_vector.similarity >= min_similarity
    order by f.fused_score desc, d.id
    offset page_offset
    limit k;
end
$$;

-- Recomputes pgseek.text_stats (documents per lexeme) and the corpus summary that
-- BM25 reads; returns the number of lexemes. The pg_cron job pgseek-text-stats runs it
-- hourly; run it after a bulk load. Readers keep the old statistics until it commits.
-- Statistics of every document are kept under tenant ''; with tenants enabled
-- (sql/095-tenants.sql), each tenant also gets statistics of its own documents.
create or replace function pgseek.refresh_text_stats()
returns bigint
language plpgsql
volatile
as $$
declare
    terms bigint;
    tenant_name text;
begin
    perform pg_advisory_xact_lock(hashtextextended('pgseek.refresh_text_stats', 0));
    delete from pgseek.text_stats;
    insert into pgseek.text_stats (tenant, term, doc_freq)
    select '', s.word, s.ndoc from ts_stat('select fts from pgseek.documents') as s;
    get diagnostics terms = row_count;
    delete from pgseek.text_stats_summary;
    insert into pgseek.text_stats_summary (tenant, documents, avg_length, refreshed_at)
    select '', count(*), coalesce(avg(length(d.fts)), 0), now() from pgseek.documents as d;
    if pgseek.tenants_enabled() then
        for tenant_name in
            select distinct d.tenant from pgseek.documents as d where d.tenant is not null
        loop
            insert into pgseek.text_stats (tenant, term, doc_freq)
            select tenant_name, s.word, s.ndoc
            from ts_stat(format('select fts from pgseek.documents where tenant = %L', tenant_name))
                as s;
        end loop;
        insert into pgseek.text_stats_summary (tenant, documents, avg_length, refreshed_at)
        select d.tenant, count(*), coalesce(avg(length(d.fts)), 0), now()
        from pgseek.documents as d
        where d.tenant is not null
        group by d.tenant;
    end if;
    return terms;
end
$$;

-- Returns the EXPLAIN ANALYZE lines of the vector query a search_similar() call with
-- these arguments runs first, with the settings it runs under (the plan of a function
-- call itself shows only a Function Scan).
create or replace function pgseek.explain_search(
    query_embedding vector,
    k integer default 10,
    metric text default 'cosine',
    filter jsonb default null,
    ef_search integer default null,
    probes integer default null
)
returns setof text
language plpgsql
volatile
set enable_indexscan = on
set "hnsw.ef_search" = 40
set "hnsw.iterative_scan" = off
set "hnsw.max_scan_tuples" = 20000
set "ivfflat.probes" = 1
set "ivfflat.iterative_scan" = off
as $$
declare
    plan record;
    scan record;
begin
    perform pgseek.check_search_arguments(k, 0, filter, ef_search, probes, null);
    plan := pgseek.vector_search_plan(query_embedding, metric, filter, k);
    scan := pgseek.similar_scan(plan.exact, plan.filtered, plan.plain, plan.ordered, k,
        coalesce(ef_search, plan.ef_search), coalesce(probes, plan.probes), false);
    return next format('-- %s scan; hnsw.ef_search = %s, hnsw.iterative_scan = %s, '
        'ivfflat.probes = %s, enable_indexscan = %s',
        case when plan.exact then 'exact' else 'index' end,
        current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan'),
        current_setting('ivfflat.probes'), current_setting('enable_indexscan'));
    return query execute 'explain (analyze, buffers, costs off) '
        || case when scan.iterate or plan.exact
            then pgseek.similar_query(plan.nearest, metric)
            else plan.nearest  -- pgseek.nearest_indexed()'s query, planned for the values
        end
    using query_embedding, filter, k, k * case when plan.ordered then 1 else plan.oversample end,
        null::float8, 0;
end
$$;

-- Recall self-check: takes `sample` stored embeddings as queries and returns the share
-- of their exact k nearest neighbours the index finds (recall@k; 1.0 = all) with the
-- settings searches use. pgvector recommends measuring this on your own data.
create or replace function pgseek.check_recall(sample integer default 20, k integer default 10)
returns table (queries integer, neighbours integer, recall double precision)
language plpgsql
volatile
as $$
declare
    query vector;
    found integer := 0;
    expected integer := 0;
    exact_ids uuid [];
    index_ids uuid [];
    dims integer := (select c.embedding_dimensions from pgseek.config as c);
    -- the configured metric: any other has no index, and exact would meet exact
    metric text := (select c.distance_metric from pgseek.config as c);
begin
    perform pgseek.check_argument(sample between 1 and 1000,
        format('sample must be between 1 and 1000, got %s', coalesce(sample::text, 'NULL')));
    perform pgseek.check_argument(k between 1 and 1000,
        format('k must be between 1 and 1000, got %s', coalesce(k::text, 'NULL')));
    queries := 0;
    for query in
        select d.embedding from pgseek.documents as d
        where vector_dims(d.embedding) = dims
        order by random()
        limit sample
    loop
        index_ids := array(
            select v.id from pgseek.vector_candidates(query, k, metric) as v
        );
        exact_ids := array(
            select v.id from pgseek.vector_candidates(query, k, metric, force_exact => true) as v
        );
        found := found + cardinality(array(select unnest(index_ids) intersect select unnest(exact_ids)));
        expected := expected + cardinality(exact_ids);
        queries := queries + 1;
    end loop;
    neighbours := k;
    recall := found::double precision / nullif(expected, 0);
    return next;
end
$$;
