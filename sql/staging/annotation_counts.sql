-- grain: one row per (dataset, variant population, annotation source, name, value)
-- keys: dataset, experiment, method, level, source, name, value
-- The counts of the Fisher tests of annotation_tests: per population of view pie and annotation
-- value, the PIEs and the non-PIEs with that value, out of the PIEs and non-PIEs annotated for
-- (source, name) at all. Images neither PIE nor non-PIE (is_pie null: the tie rule 'exclude')
-- and images without a value for the name are left out.
with annotated as (
    select p.dataset, p.experiment, p.method, p.level, p.sparsity, a.source, a.name, a.value, p.is_pie
    from pie as p
    inner join annotations as a on a.dataset = p.dataset and a.key = p.key
    where p.is_pie is not null
),

per_value as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        source,
        name,
        value,
        count(*) filter (where is_pie) as n_pie_with_value,
        count(*) filter (where not is_pie) as n_non_pie_with_value
    from annotated
    group by dataset, experiment, method, level, sparsity, source, name, value
),

final as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        source,
        name,
        value,
        n_pie_with_value,
        sum(n_pie_with_value) over per_name as n_pie,
        n_non_pie_with_value,
        sum(n_non_pie_with_value) over per_name as n_non_pie
    from per_value
    window per_name as (partition by dataset, experiment, method, level, source, name)
)

select * from final
