-- inference_runs: one row per (model, dataset) evaluated; written in the same transaction
-- as the pair's predictions, so a row here means the pair is complete.
-- key: (model_id, dataset)
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
    primary key (model_id, dataset)
);
