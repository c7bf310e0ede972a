-- grain: one row per class of a label space
-- keys: label_space, class_id
-- class_id is the model's output index.
create table if not exists classes (
    label_space varchar not null,
    class_id integer not null,
    wnid varchar,  -- WordNet id for ImageNet classes, null elsewhere
    name varchar not null,
    primary key (label_space, class_id)
);
