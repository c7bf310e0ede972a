-- grain: one row per (dataset, variant population, image)
-- keys: dataset, population_id, key_id
-- materialised: stored
-- View pie on integer ids, without names, keys or the ranking (pie adds them). What `pie analyze`
-- stores; see pie for the columns.
-- population_id: the variant population (populations: any population but its experiment's dense
-- one, pruned or quantised alike); its baseline is the population's dense_population_id.
-- key_id: the image's key interned (image_keys).
with tie_rule as (
    select mode_tie_break as rule
    from analysis_settings
),

variant as (
    select m.*, p.dense_population_id
    from population_modes as m
    inner join populations as p using (population_id)
    where p.population_id <> p.dense_population_id
),

dense as (
    select m.*
    from population_modes as m
    inner join populations as p using (population_id)
    where p.population_id = p.dense_population_id
),

votes as (
    select
        v.dataset,
        v.population_id,
        p.dense_population_id,
        v.key_id,
        v.pred,
        v.n_votes,
        m.n_models
    from population_votes as v
    inner join population_modes as m using (dataset, population_id, key_id)
    inner join populations as p using (population_id)
),

overlap as (
    select
        v.dataset,
        v.population_id,
        v.key_id,
        sum(least(v.n_votes * d.n_models, d.n_votes * v.n_models))
        / (any_value(v.n_models) * any_value(d.n_models)) as overlap
    from votes as v
    inner join votes as d
        on d.dataset = v.dataset and d.population_id = v.dense_population_id
        and d.key_id = v.key_id and d.pred = v.pred
    where v.population_id <> v.dense_population_id
    group by v.dataset, v.population_id, v.key_id
),

joined as (
    select
        v.dataset,
        v.population_id,
        v.key_id,
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
        d.tied or v.tied as tie_decided
    from variant as v
    inner join dense as d
        on d.dataset = v.dataset and d.population_id = v.dense_population_id
        and d.key_id = v.key_id
    left join overlap as o
        on o.dataset = v.dataset and o.population_id = v.population_id and o.key_id = v.key_id
    cross join tie_rule as t
),

final as (
    select *
    from joined
)

select * from final
