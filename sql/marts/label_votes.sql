-- grain: one row per (dataset, population, image, predicted label)
-- keys: dataset, experiment, method, level, key, pred
-- How many of the population's models predicted that label, and their share of the population
-- (population_votes, with the population's names and the image's key).
-- label: the image's true label; sum_p_label: those models' summed probability of the true label.
with names as (
    select population_id, experiment, method, level, sparsity
    from populations
),

final as (
    select
        v.dataset,
        n.experiment,
        n.method,
        n.level,
        n.sparsity,
        k.key,
        v.pred,
        v.label,
        v.n_votes,
        v.sum_p_label,
        v.n_votes / sum(v.n_votes) over (partition by v.dataset, v.population_id, v.key_id)
            as share,
        v.population_id,
        v.key_id
    from population_votes as v
    inner join names as n using (population_id)
    inner join image_keys as k using (key_id)
)

select * from final
