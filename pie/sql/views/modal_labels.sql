-- modal_labels: one row per (dataset, population, image): the population's modal top-1 label.
-- keys: (dataset, experiment, method, sparsity, key)
-- A tied mode goes to the largest class id, the reference's rule; setting 'mode_tie_break' =
-- 'smallest' (analyze.tie_rule) gives it to the smallest instead; under 'exclude' the mode shown
-- is the largest and the image is left out of the PIE sets (pie.is_pie is null).
-- agreement: share of the population's models that voted for the mode. tied: two or more labels
-- share the top vote count, so the tie-break rule chose the mode. fraction_correct and
-- mean_p_label: over the population's models, of the true label. population_id, key_id: as in
-- population_votes. One aggregate over population_votes: the mode is the label with the most votes, ties
-- ordered by the class id (a vote count and a class id packed into one sort key).
with tie_break as (
    select case when any_value(value) = 'smallest' then -1 else 1 end as direction
    from settings
    where name = 'mode_tie_break'
),

votes as (
    select
        v.dataset,
        v.population_id,
        v.key_id,
        v.label,
        v.pred,
        v.n_votes,
        v.sum_p_label,
        v.n_votes * 4294967296 + v.pred * t.direction as rank_key
    from population_votes as v
    cross join tie_break as t
),

per_image as (
    select
        dataset,
        population_id,
        key_id,
        any_value(label) as label,
        arg_max(pred, rank_key) as mode,
        max(n_votes, 2) as top_votes,
        sum(n_votes)::bigint as n_models,
        coalesce(sum(n_votes) filter (where pred = label), 0) as n_correct,
        sum(sum_p_label) as sum_p_label
    from votes
    group by dataset, population_id, key_id
),

names as (
    select distinct population_id, experiment, method, sparsity
    from model_populations
),

final as (
    select
        p.dataset,
        n.experiment,
        n.method,
        n.sparsity,
        k.key,
        p.label,
        p.mode,
        p.top_votes[1] as mode_votes,
        p.n_models,
        p.top_votes[1] / p.n_models as agreement,
        len(p.top_votes) = 2 and p.top_votes[2] = p.top_votes[1] as tied,
        p.n_correct / p.n_models as fraction_correct,
        p.sum_p_label / p.n_models as mean_p_label,
        p.population_id,
        p.key_id
    from per_image as p
    inner join names as n using (population_id)
    inner join image_keys as k using (key_id)
)

select * from final
