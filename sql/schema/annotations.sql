-- grain: one row per (dataset, image, annotation source, annotation name)
-- keys: dataset, key, source, name
-- What a user's file says about an image, in long form: `pie annotate FILE --dataset D --source
-- NAME` (analytics.annotate) writes one row per matched image and column of the file (name =
-- the column, value = its cell as text, or a quantile bin of it with --bins); a file of keys
-- only marks every image of the dataset listed = 'true' or 'false'. An empty cell writes no
-- row: the image is not annotated for that name. Annotating the same (dataset, source) again
-- replaces its rows in one transaction.
create table if not exists annotations (
    dataset varchar not null,
    key varchar not null,     -- images.key
    source varchar not null,  -- --source: who or what annotated (a study, a list of errors)
    name varchar not null,    -- the file's column
    value varchar not null,
    primary key (dataset, key, source, name)
);
