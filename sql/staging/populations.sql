-- grain: one row per population = (experiment, method, sparsity)
-- keys: population_id
-- Its integer ordinal and that of its baseline, the same experiment's dense population (sparsity
-- 0).
-- population_id: as in model_populations. dense_population_id is null when the experiment has
-- no dense population; for the dense population it is its own id.
with names as (
    select distinct population_id, experiment, method, sparsity
    from model_populations
),

final as (
    select
        p.population_id,
        p.experiment,
        p.method,
        p.sparsity,
        d.population_id as dense_population_id
    from names as p
    left join names as d on d.experiment = p.experiment and d.sparsity = 0
)

select * from final
