-- modal_labels: one row per (dataset, population, image): the population's modal top-1 label.
-- keys: (dataset, experiment, method, sparsity, key)
-- A tied mode goes to the largest class id, the reference's rule; setting 'mode_tie_break' =
-- 'smallest' (analyze.tie_rule) gives it to the smallest instead; under 'exclude' the mode shown
-- is the largest and the image is left out of the PIE sets (pie.is_pie is null).
-- agreement: share of the population's models that voted for the mode. tied: two or more labels
-- share the top vote count, so the tie-break rule chose the mode. fraction_correct and
-- mean_p_label: over the population's models, of the true label.
with tie_break as (
    select case when any_value(value) = 'smallest' then -1 else 1 end as direction
    from settings
    where name = 'mode_tie_break'
),

ranked as (
    select
        v.dataset,
        v.experiment,
        v.method,
        v.sparsity,
        v.key,
        v.pred,
        v.n_votes,
        v.share,
        row_number() over (
            partition by v.dataset, v.experiment, v.method, v.sparsity, v.key
            order by v.n_votes desc, v.pred * t.direction desc
        ) as vote_rank,
        count(*) over (
            partition by v.dataset, v.experiment, v.method, v.sparsity, v.key, v.n_votes
        ) as n_labels_with_these_votes
    from label_votes as v
    cross join tie_break as t
),

population as (
    select
        dataset,
        experiment,
        method,
        sparsity,
        key,
        any_value(label) as label,
        sum(n_votes)::bigint as n_models,
        coalesce(sum(n_votes) filter (where pred = label), 0) / sum(n_votes) as fraction_correct,
        sum(sum_p_label) / sum(n_votes) as mean_p_label
    from label_votes
    group by dataset, experiment, method, sparsity, key
),

final as (
    select
        p.dataset,
        p.experiment,
        p.method,
        p.sparsity,
        p.key,
        p.label,
        r.pred as mode,
        r.n_votes as mode_votes,
        p.n_models,
        r.share as agreement,
        r.n_labels_with_these_votes > 1 as tied,
        p.fraction_correct,
        p.mean_p_label
    from population as p
    inner join ranked as r using (dataset, experiment, method, sparsity, key)
    where r.vote_rank = 1
)

select * from final
