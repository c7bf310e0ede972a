-- pie: one row per (dataset, variant population, image): is the image a pruning identified
-- exemplar, i.e. does the variant population's modal label differ from the dense one's?
-- keys: (dataset, experiment, method, sparsity, key)
-- Variant populations have sparsity > 0; the baseline is the same experiment's dense population
-- (sparsity 0). The true label plays no part in is_pie. l1_distance is the taxicab distance
-- between the two populations' distributions of predicted labels, in [0, 2] (the CIE ranking of
-- Hooker et al. 2020), computed as 2 - 2 * sum over classes of min(share_variant, share_dense),
-- the sum taken over integer vote counts scaled to a common denominator, so that it is exact and
-- the same in every run (a float sum's value depends on the order parallel threads add in).
-- tie_decided: the dense or the variant population's mode was chosen by the tie-break rule (two or
-- more labels shared its top vote count; modal_labels.tied), so is_pie hangs on that rule; under
-- the rule 'exclude' (setting mode_tie_break) such an image is neither PIE nor non-PIE: is_pie is
-- null. cie_rank: 1 for the image whose label distributions differ most (largest l1_distance,
-- ties by key) within its (dataset, population): the CIE ranking, any compression method.
-- key_id: the key interned (image_keys); images are matched on it, not on the key string.
with tie_rule as (
    select coalesce(any_value(value), 'largest') as rule
    from settings
    where name = 'mode_tie_break'
),

modes as (
    select *
    from modal_labels
),

dense as (
    select * from modes where sparsity = 0
),

variant as (
    select * from modes where sparsity > 0
),

counts as (
    select
        m.dataset,
        m.experiment,
        m.sparsity,
        m.population_id,
        m.key_id,
        v.pred,
        v.n_votes,
        m.n_models
    from population_votes as v
    inner join modes as m using (dataset, population_id, key_id)
),

dense_counts as (
    select dataset, experiment, key_id, pred, n_votes, n_models
    from counts
    where sparsity = 0
),

variant_counts as (
    select dataset, experiment, population_id, key_id, pred, n_votes, n_models
    from counts
    where sparsity > 0
),

overlap as (
    select
        v.dataset,
        v.population_id,
        v.key_id,
        sum(least(v.n_votes * d.n_models, d.n_votes * v.n_models))
        / (any_value(v.n_models) * any_value(d.n_models)) as overlap
    from variant_counts as v
    inner join dense_counts as d using (dataset, experiment, key_id, pred)
    group by v.dataset, v.population_id, v.key_id
),

joined as (
    select
        v.dataset,
        v.experiment,
        v.method,
        v.sparsity,
        v.key,
        v.label,
        d.mode as baseline_mode,
        v.mode as variant_mode,
        case
            when t.rule = 'exclude' and (d.tied or v.tied) then null
            else d.mode <> v.mode
        end as is_pie,
        d.n_models as baseline_n,
        v.n_models as variant_n,
        d.mode_votes as baseline_votes,
        v.mode_votes as variant_votes,
        d.agreement as baseline_agreement,
        v.agreement as variant_agreement,
        d.mean_p_label as baseline_mean_p_label,
        v.mean_p_label as variant_mean_p_label,
        d.mode = v.label as baseline_correct,
        v.mode = v.label as variant_correct,
        2 - 2 * coalesce(o.overlap, 0) as l1_distance,
        d.tied or v.tied as tie_decided,
        v.population_id,
        v.key_id
    from variant as v
    inner join dense as d using (dataset, experiment, key_id)
    left join overlap as o
        on o.dataset = v.dataset and o.population_id = v.population_id and o.key_id = v.key_id
    cross join tie_rule as t
),

final as (
    select
        * exclude (population_id),
        row_number() over (
            partition by dataset, population_id order by l1_distance desc, key
        ) as cie_rank
    from joined
)

select * from final
