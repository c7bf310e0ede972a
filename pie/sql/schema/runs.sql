-- runs: one row per stage invocation that wrote something: the resolved config and a summary.
-- key: none (append-only log), ordered by started_at.
create table if not exists runs (
    stage varchar not null,
    experiment varchar,
    config json not null,
    summary varchar,
    started_at timestamp not null,
    finished_at timestamp default current_timestamp
);
