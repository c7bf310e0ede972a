-- grain: one row per (dataset, population, image)
-- keys: dataset, experiment, method, level, key
-- The population's modal top-1 label (population_modes, with the population's names and the image's
-- key).
-- See population_modes for the tie rule and the columns; population_id and key_id: the integer
-- ids the analysis joins on (model_populations, image_keys).
with modes as (
    select *
    from population_modes
),

final as (
    select
        m.dataset,
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        k.key,
        m.label,
        m.mode,
        m.mode_votes,
        m.n_models,
        m.agreement,
        m.tied,
        m.fraction_correct,
        m.mean_p_label,
        m.population_id,
        m.key_id
    from modes as m
    inner join populations as p using (population_id)
    inner join image_keys as k using (key_id)
)

select * from final
