-- grain: one row per stage invocation that wrote something
-- keys: none
-- The resolved config and a summary; an append-only log, ordered by started_at.
create table if not exists runs (
    stage varchar not null,
    experiment varchar,
    config json not null,
    summary varchar,
    started_at timestamp not null,
    finished_at timestamp default current_timestamp,
    pie_version varchar,  -- the pie that ran it (pie.provenance): its version
    pie_commit varchar    -- and its git commit (`-dirty`: uncommitted changes); null outside git
);
-- a database made before the provenance columns gets them (null in its older rows)
alter table runs add column if not exists pie_version varchar;
alter table runs add column if not exists pie_commit varchar;
