-- grain: one row per (dataset, population, image)
-- keys: dataset, population_id, key_id
-- materialised: stored
-- The population's modal top-1 label, on integer ids (modal_labels shows it with names and keys).
-- What `pie analyze` stores.
-- A tied mode goes to the largest class id, the reference's rule; setting mode_tie_break =
-- 'smallest' (analysis_settings) gives it to the smallest instead; under 'exclude' the mode shown
-- is the largest and the image is left out of the PIE sets (pie.is_pie is null).
-- mode_votes: the mode's votes; agreement: their share of the population's models. tied: two or
-- more labels share the top vote count, so the tie-break rule chose the mode. fraction_correct and
-- mean_p_label: over the population's models, of the true label. One aggregate over
-- population_votes: the mode is the label with the most votes, ties ordered by the class id (a
-- vote count and a class id packed into one sort key).
with tie_break as (
    select case when mode_tie_break = 'smallest' then -1 else 1 end as direction
    from analysis_settings
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

final as (
    select
        dataset,
        population_id,
        key_id,
        label,
        mode,
        top_votes[1] as mode_votes,
        n_models,
        top_votes[1] / n_models as agreement,
        len(top_votes) = 2 and top_votes[2] = top_votes[1] as tied,
        n_correct / n_models as fraction_correct,
        sum_p_label / n_models as mean_p_label
    from per_image
)

select * from final
