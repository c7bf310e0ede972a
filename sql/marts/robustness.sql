-- grain: one row per (dataset, population)
-- keys: dataset, experiment, method, level
-- materialised: stored
-- The population's top-1 on the dataset, next to the dense population's on the same dataset and to
-- its own on the clean parent dataset.
-- error_vs_dense: mean error / dense mean error (1.0 for the dense population). origin: the
-- dataset's (released | generated | export), so released and generated corruptions stay apart.
-- The dense population: the experiment's models of method 'dense', level 0 (populations).
with accuracy as (
    select dataset, experiment, method, level, sparsity, top1
    from model_accuracy
),

population as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        count(*) as n_models,
        avg(top1) as mean_top1,
        stddev_samp(top1) as std_top1
    from accuracy
    group by dataset, experiment, method, level, sparsity
),

dense as (
    select dataset, experiment, mean_top1 as dense_top1
    from population
    where method = 'dense' and level = 0
),

on_parent as (
    select dataset as parent, experiment, method, level, mean_top1 as clean_top1
    from population
),

final as (
    select
        p.dataset,
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        d.kind,
        d.origin,
        d.parent,
        d.corruption,
        d.severity,
        p.n_models,
        p.mean_top1,
        p.std_top1,
        1 - p.mean_top1 as mean_error,
        n.dense_top1,
        1 - n.dense_top1 as dense_error,
        (1 - p.mean_top1) / nullif(1 - n.dense_top1, 0) as error_vs_dense,
        c.clean_top1,
        p.mean_top1 - c.clean_top1 as top1_change_vs_clean
    from population as p
    inner join datasets as d on d.name = p.dataset
    left join dense as n using (dataset, experiment)
    left join on_parent as c
        on c.parent = d.parent and c.experiment = p.experiment
        and c.method = p.method and c.level = p.level
)

select * from final
