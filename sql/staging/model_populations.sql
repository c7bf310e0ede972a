-- grain: one row per model
-- keys: model_id
-- The population it belongs to, population = (experiment, method, sparsity), and that population's
-- integer ordinal.
-- population_id: 1, 2, ... in (experiment, method, sparsity) order; the analysis groups and joins
-- populations on it rather than on the three names. It is an ordinal of the models present, so it
-- may change when models are added: join on it only within one query or one `pie analyze`.
-- model_ord: the model id interned (model_ords), which the predictions carry; null for a model
-- with no predictions stored yet.
with models_ as (
    select model_id, experiment, method, target_sparsity as sparsity
    from models
),

final as (
    select
        m.model_id,
        o.model_ord,
        m.experiment,
        m.method,
        m.sparsity,
        dense_rank() over (order by m.experiment, m.method, m.sparsity)::integer as population_id
    from models_ as m
    left join model_ords as o using (model_id)
)

select * from final
