-- grain: one row per model
-- keys: model_id
-- The population it belongs to, population = (experiment, method, level), and that population's
-- integer ordinal.
-- level: models.level, the target sparsity for dense and pruned models, the bit width for
-- quantised ones (a row written without one counts its target sparsity). sparsity: the target
-- sparsity of the population's models (the largest, should they differ; a model quantised from a
-- dense one has 0). quantised: the model's `compression` (models.config) has a `bits` entry, so
-- its level is a bit width.
-- population_id: 1, 2, ... in (experiment, method, level) order; the analysis groups and joins
-- populations on it rather than on the three names. It is an ordinal of the models present, so it
-- may change when models are added: join on it only within one query or one `pie analyze`.
-- model_ord: the model id interned (model_ords), which the predictions carry; null for a model
-- with no predictions stored yet.
with models_ as (
    select
        model_id,
        experiment,
        method,
        coalesce(level, target_sparsity) as level,
        target_sparsity,
        json_extract(config, '$.compression.bits') is not null as quantised
    from models
),

final as (
    select
        m.model_id,
        o.model_ord,
        m.experiment,
        m.method,
        m.level,
        max(m.target_sparsity) over (partition by m.experiment, m.method, m.level) as sparsity,
        m.quantised,
        dense_rank() over (order by m.experiment, m.method, m.level)::integer as population_id
    from models_ as m
    left join model_ords as o using (model_id)
)

select * from final
