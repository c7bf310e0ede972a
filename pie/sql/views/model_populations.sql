-- model_populations: one row per model: the population it belongs to, population =
-- (experiment, method, sparsity), and that population's integer ordinal.
-- keys: model_id
-- population_id: 1, 2, ... in (experiment, method, sparsity) order; the analysis groups and joins
-- populations on it rather than on the three names. It is an ordinal of the models present, so it
-- may change when models are added: join on it only within one query or one `pie analyze`.
with models_ as (
    select model_id, experiment, method, target_sparsity as sparsity
    from models
),

final as (
    select
        model_id,
        experiment,
        method,
        sparsity,
        dense_rank() over (order by experiment, method, sparsity)::integer as population_id
    from models_
)

select * from final
