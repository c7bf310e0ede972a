-- grain: one row per input rejected while packing a dataset
-- keys: none
-- An append-only log; (dataset, source) identifies the input.
create table if not exists ingest_errors (
    dataset varchar not null,
    source varchar not null,
    error varchar not null,
    recorded_at timestamp default current_timestamp
);
