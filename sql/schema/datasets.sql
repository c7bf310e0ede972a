-- grain: one row per packed dataset (a directory of shards under shards/ or exports/)
-- keys: name
-- kind: clean | corrupted | natural_adversarial | rendition | export
-- origin: released (packed as published: Fashion-MNIST, ImageNet, the released ImageNet-C files,
--   ImageNet-A/R, any folder or manifest), generated (made by `pie corrupt`), export (`pie export`).
--   Released and generated corruptions of one parent coexist under different names.
-- class_subset: the label-space class ids the dataset covers when it covers only some of them
--   (ImageNet-A/R: 200 of 1000); evaluation restricts a model's logits to these. Null = all.
create table if not exists datasets (
    name varchar primary key,
    label_space varchar not null,
    kind varchar not null,
    split varchar not null,  -- train | eval
    parent varchar,          -- the clean dataset a corrupted or exported one derives from
    corruption varchar,
    severity integer,
    n_images bigint not null,
    class_subset integer[],
    path varchar not null,   -- the shard directory, relative to the work root
    source varchar,          -- where the images came from (a directory, a file, a command)
    origin varchar not null default 'released',  -- released | generated | export
    settings json,           -- what produced it (source, limit, seed, ...): reruns must match
    created_at timestamp default current_timestamp
);
