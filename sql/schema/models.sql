-- grain: one row per trained checkpoint
-- keys: model_id
-- A population is (experiment, method, target_sparsity); the dense population of an
-- experiment is its models with target_sparsity = 0 (method 'dense').
create table if not exists models (
    model_id varchar primary key,
    experiment varchar not null,
    arch varchar not null,
    label_space varchar not null,
    method varchar not null,
    target_sparsity double not null,
    achieved_sparsity double not null,
    seed integer not null,
    train_dataset varchar not null,
    test_top1 double,
    path varchar not null,
    sha256 varchar not null,
    config json not null,
    created_at timestamp default current_timestamp
);
