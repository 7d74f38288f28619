-- pgseek 0013: the API key went to whatever base_url pgseek.config named, and
-- pgseek_admin may update the configuration: an admin could point base_url at a
-- server of their own, call pgseek.embed() and read the key from the request (the
-- README promises admins cannot read it back). A key now records the server it is for
-- (NULL: the provider's default, https://api.openai.com/v1) and is sent to no other.
-- Keys stored before this are bound to the server the current model uses, so
-- an install that works keeps working.
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- provider_secrets holds a row per provider: validating the check scans one row.
alter table pgseek.provider_secrets
add column base_url text,
-- squawk-ignore constraint-missing-not-valid
add constraint provider_secrets_base_url_http check (
    base_url ~ '^https?://[^/@[:space:]]+(/[^@[:space:]]*)?$'
);
comment on column pgseek.provider_secrets.base_url is
'The server the key is sent to (trailing / removed); NULL: the provider''s default.';

update pgseek.provider_secrets as s
set base_url = pg_catalog.rtrim(c.embedding_options ->> 'base_url', '/')
from pgseek.config as c
where s.provider = c.embedding_provider and c.embedding_options ? 'base_url';
