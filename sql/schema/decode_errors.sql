-- grain: one row per image of an evaluated dataset that could not become a model input
-- keys: dataset, key
-- A corrupt file in the shards; an image smaller than a crop-only rule's crop. `pie infer`
-- skips these images and replaces a dataset's rows each time it decodes the dataset.
create table if not exists decode_errors (
    dataset varchar not null,
    key varchar not null,
    error varchar not null,
    recorded_at timestamp default current_timestamp,
    primary key (dataset, key)
);
