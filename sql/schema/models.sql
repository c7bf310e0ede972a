-- grain: one row per checkpoint (trained, derived by `pie compress` or imported)
-- keys: model_id
-- A population is (experiment, method, level); the dense population of an experiment is its
-- models of method 'dense'. level: the target sparsity for dense and pruned models, the bit
-- width for quantised ones. parent_id: the model a derived one was made from (null otherwise).
-- params, nonzero_params, size_bytes: what the saved model holds (0 where not recorded).
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
alter table models add column if not exists level double;
alter table models add column if not exists parent_id varchar;
alter table models add column if not exists params bigint default 0;
alter table models add column if not exists nonzero_params bigint default 0;
alter table models add column if not exists size_bytes bigint default 0;
update models set level = target_sparsity where level is null;
