-- grain: one row per population = (experiment, method, level)
-- keys: population_id
-- Its integer ordinal and that of its baseline, the same experiment's dense population: its models
-- of method 'dense' (level 0). Every other population of the experiment is a variant compared
-- with it, whatever its compression (pruned, quantised, imported): a quantised population has
-- sparsity 0 too, yet it is a variant.
-- population_id: as in model_populations. dense_population_id is null when the experiment has
-- no dense population; for the dense population it is its own id. sparsity: as in
-- model_populations. quantised: any of its models is (model_populations), so its level is a bit
-- width and its exemplars are CIEs (compression identified exemplars) rather than PIEs.
with names as (
    select
        population_id,
        any_value(experiment) as experiment,
        any_value(method) as method,
        any_value(level) as level,
        any_value(sparsity) as sparsity,
        bool_or(quantised) as quantised
    from model_populations
    group by population_id
),

final as (
    select
        p.population_id,
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        p.quantised,
        d.population_id as dense_population_id
    from names as p
    left join names as d
        on d.experiment = p.experiment and d.method = 'dense' and d.level = 0
)

select * from final
