-- grain: one row per label space (the set of classes a model predicts over)
-- keys: label_space
create table if not exists label_spaces (
    label_space varchar primary key,
    n_classes integer not null,
    description varchar
);
