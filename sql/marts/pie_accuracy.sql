-- grain: one row per (dataset evaluated, variant population, subset)
-- keys: dataset, experiment, method, level, is_pie
-- materialised: stored
-- Subset = the PIEs of the clean dataset or the rest: how many images, and the mean top-1 of the
-- dense and of the variant population on them (mean over models and images).
-- pie_dataset: the clean dataset whose PIE sets define the subsets. An image's PIE status follows
-- its key into the corrupted variants of pie_dataset, so those get rows too (dataset = the
-- variant, with its corruption and severity; the variant's own PIE sets do not enter here); for
-- the other rows dataset = pie_dataset. Images
-- excluded by the tie rule 'exclude' (is_pie null) are in neither subset.
with membership as (
    select u.dataset as pie_dataset, u.population_id, p.dense_population_id, u.key_id, u.is_pie
    from pie_unranked as u
    inner join populations as p using (population_id)
    where u.is_pie is not null
),

clean as (
    select distinct pie_dataset
    from membership
    where pie_dataset not in (select name from datasets where kind = 'corrupted')
),

targets as (
    select pie_dataset as dataset, pie_dataset, null::varchar as corruption,
        null::integer as severity
    from clean
    union all
    select d.name as dataset, c.pie_dataset, d.corruption, d.severity
    from datasets as d
    inner join clean as c on d.parent = c.pie_dataset
    where d.kind = 'corrupted'
),

modes as (
    select dataset, population_id, key_id, n_models, fraction_correct
    from population_modes
),

evaluated as (
    select
        t.dataset,
        t.pie_dataset,
        t.corruption,
        t.severity,
        m.population_id,
        m.is_pie,
        b.n_models * b.fraction_correct as baseline_correct,
        b.n_models as baseline_n,
        v.n_models * v.fraction_correct as variant_correct,
        v.n_models as variant_n
    from membership as m
    inner join targets as t on t.pie_dataset = m.pie_dataset
    inner join modes as b
        on b.dataset = t.dataset and b.population_id = m.dense_population_id
        and b.key_id = m.key_id
    inner join modes as v
        on v.dataset = t.dataset and v.population_id = m.population_id and v.key_id = m.key_id
),

per_subset as (
    select
        dataset,
        population_id,
        is_pie,
        any_value(pie_dataset) as pie_dataset,
        any_value(corruption) as corruption,
        any_value(severity) as severity,
        count(*) as n_images,
        sum(baseline_correct) / sum(baseline_n) as baseline_top1,
        sum(variant_correct) / sum(variant_n) as variant_top1
    from evaluated
    group by dataset, population_id, is_pie
),

final as (
    select
        s.dataset,
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        s.is_pie,
        s.pie_dataset,
        s.corruption,
        s.severity,
        s.n_images,
        s.baseline_top1,
        s.variant_top1
    from per_subset as s
    inner join populations as p using (population_id)
)

select * from final
