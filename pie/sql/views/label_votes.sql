-- label_votes: one row per (dataset, population, image, predicted label): how many of the
-- population's models predicted that label, and their share of the population. The one scan of
-- the predictions that modal_labels, pie and pie_accuracy are counted from.
-- keys: (dataset, experiment, method, sparsity, key, pred)
-- label: the image's true label; sum_p_label: those models' summed probability of the true label.
-- population_id: an integer ordinal of the population (experiment, method, sparsity), the same in
-- modal_labels; the votes are counted on it rather than on the three names (faster).
with populations as (
    select
        model_id,
        experiment,
        method,
        target_sparsity as sparsity,
        dense_rank() over (order by experiment, method, target_sparsity)::integer as population_id
    from models
),

votes as (
    select
        p.dataset,
        m.population_id,
        p.key,
        p.pred,
        any_value(p.label) as label,
        count(*) as n_votes,
        sum(p.p_label) as sum_p_label
    from predictions as p
    inner join populations as m using (model_id)
    group by p.dataset, m.population_id, p.key, p.pred
),

names as (
    select distinct population_id, experiment, method, sparsity
    from populations
),

final as (
    select
        v.dataset,
        n.experiment,
        n.method,
        n.sparsity,
        v.key,
        v.pred,
        v.label,
        v.n_votes,
        v.sum_p_label,
        v.n_votes / sum(v.n_votes) over (partition by v.dataset, v.population_id, v.key) as share,
        v.population_id
    from votes as v
    inner join names as n using (population_id)
)

select * from final
