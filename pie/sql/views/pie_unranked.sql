-- pie_unranked: one row per (dataset, variant population, image): view pie without its ranking
-- (materialised by `pie analyze`; pie adds cie_rank when a query asks for it). See pie for the
-- columns.
-- keys: (dataset, experiment, method, sparsity, key)
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
    select * exclude (population_id)
    from joined
)

select * from final
