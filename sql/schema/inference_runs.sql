-- grain: one row per (model, dataset) evaluated
-- keys: model_id, dataset
-- Written in the same transaction as the pair's predictions, so a row here means the pair is
-- complete.
-- checkpoint_sha256 and dataset_hash pin the row to what was evaluated: the checkpoint's
-- sha256 (the models row) and the dataset's content hash (pie.shards.dataset_hash); when either
-- differs from the current one, the next `pie infer` evaluates the pair again and replaces it.
create table if not exists inference_runs (
    model_id varchar not null,
    dataset varchar not null,
    n_images bigint not null,  -- predictions written (images that could not be decoded: none)
    status varchar not null,  -- done
    checkpoint_sha256 varchar,
    dataset_hash varchar,
    top1 double,
    preprocess json,  -- the checkpoint's Preprocess and the rule (resize_then_crop, center_crop_only)
    seconds double,
    finished_at timestamp default current_timestamp,
    pie_version varchar,  -- the pie that evaluated it (pie.provenance): its version
    pie_commit varchar,   -- and its git commit (`-dirty`: uncommitted changes); null outside git
    primary key (model_id, dataset)
);
-- a database made before the provenance columns gets them (null in its older rows)
alter table inference_runs add column if not exists pie_version varchar;
alter table inference_runs add column if not exists pie_commit varchar;
