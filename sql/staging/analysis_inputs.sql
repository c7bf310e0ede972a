-- grain: one row
-- keys: none
-- A fingerprint of everything the materialised analysis is computed from, so that `pie analyze`
-- rebuilds only when it changed and readers never use stale tables.
-- It changes when predictions are added, deleted or replaced (settings.predictions_version
-- counts every write, so a replacement of the same row count counts too; inference_runs: pairs,
-- checkpoint and dataset hashes, finish times), when models or datasets change, or when an
-- analysis setting (tie rule, alpha, ...) does.
with preds as (
    select count(*) as n
    from predictions
),

runs as (
    select
        count(*) as n,
        coalesce(bit_xor(hash(model_id, dataset, checkpoint_sha256, dataset_hash, finished_at)), 0)
            as h
    from inference_runs
),

model_rows as (
    select
        count(*) as n,
        coalesce(bit_xor(hash(model_id, experiment, method, target_sparsity, level)), 0) as h
    from models
),

dataset_rows as (
    select
        count(*) as n,
        coalesce(bit_xor(hash(name, kind, parent, corruption, severity, origin)), 0) as h
    from datasets
    where kind <> 'export'  -- an export enters the analysis only once evaluated (inference_runs)
),

analysis_settings as (
    select coalesce(string_agg(name || '=' || value, ';' order by name), '') as s
    from settings
    where name <> 'schema_version'
),

final as (
    select
        md5(concat_ws(
            '|', p.n, r.n, r.h, m.n, m.h, d.n, d.h, s.s
        )) as fingerprint,
        p.n as n_predictions,
        r.n as n_inference_runs
    from preds as p, runs as r, model_rows as m, dataset_rows as d, analysis_settings as s
)

select * from final
