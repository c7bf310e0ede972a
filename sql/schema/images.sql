-- grain: one row per image of a dataset
-- keys: dataset, key
-- key is the WebDataset __key__, shared by a corrupted variant and its parent.
create table if not exists images (
    dataset varchar not null,
    key varchar not null,
    label integer not null,
    shard varchar not null,  -- shard file name inside the dataset's directory
    primary key (dataset, key)
);
