-- grain: one row per (model, dataset, image)
-- keys: model_id, dataset, key
-- Uniqueness is guaranteed by writing each (model_id, dataset) pair in one transaction that
-- first deletes the pair's old rows and ends with its inference_runs row (no index: billions of
-- rows). Rows are written and deleted only through
-- store.insert_predictions and store.delete_predictions, which fill key_id and model_ord and
-- keep model_class_counts in step.
create table if not exists predictions (
    model_id varchar not null,
    dataset varchar not null,
    key varchar not null,
    label integer not null,
    pred integer not null,    -- top-1 class id (within the dataset's class subset, if any)
    top5 integer[] not null,  -- top-5 class ids, best first
    p_label float not null,   -- softmax probability of the true label
    p_pred float not null,    -- softmax probability of pred
    key_id integer not null,  -- the key interned (image_keys): what the analysis groups on
    model_ord integer not null  -- the model id interned (model_ords): what it joins models on
);
