-- grain: one row: the inference_runs row of one (model, dataset) pair being loaded
-- keys: model_id, dataset
-- Not a relation of the database: infer.sink.load_pair runs it on the pair's Parquet parts
-- ($paths) in its load transaction, with the pair's fingerprint, preprocessing, seconds and the
-- pie that loaded it (pie.provenance) as parameters.
with parts as (
    select pred, label
    from read_parquet($paths)
),

final as (
    select
        $model_id as model_id,
        $dataset as dataset,
        count(*) as n_images,
        'done' as status,
        $checkpoint_sha256 as checkpoint_sha256,
        $dataset_hash as dataset_hash,
        avg((pred = label)::double) as top1,
        $preprocess as preprocess,
        $seconds as seconds,
        $pie_version as pie_version,
        $pie_commit as pie_commit
    from parts
)

select * from final
