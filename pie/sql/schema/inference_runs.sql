-- inference_runs: one row per (model, dataset) evaluated; written in the same transaction
-- as the pair's predictions, so a row here means the pair is complete.
-- key: (model_id, dataset)
create table if not exists inference_runs (
    model_id varchar not null,
    dataset varchar not null,
    n_images bigint not null,
    status varchar not null,  -- done
    top1 double,
    seconds double,
    finished_at timestamp default current_timestamp,
    primary key (model_id, dataset)
);
