-- population_summary: one row per (dataset, population): the headline numbers of the study.
-- keys: (dataset, experiment, method, sparsity)
-- mean/std top-1 over the population's models; classes significantly impacted (class_tstats,
-- as of the last `pie analyze`); PIE count and the dense population's top-1 on PIEs and on the
-- rest; mean corruption error relative to dense over the corruptions of this (clean) dataset.
with accuracy as (
    select dataset, experiment, method, sparsity, n_models, mean_top1, std_top1
    from robustness
),

impacted as (
    select
        dataset,
        experiment,
        method,
        sparsity,
        count(*) filter (where significant) as n_significant_classes,
        count(*) as n_classes_tested
    from class_tstats
    group by dataset, experiment, method, sparsity
),

pies as (
    select
        dataset,
        experiment,
        method,
        sparsity,
        count(*) filter (where is_pie) as n_pie,
        count(*) as n_images
    from pie
    group by dataset, experiment, method, sparsity
),

pie_top1 as (
    select
        dataset,
        experiment,
        method,
        sparsity,
        max(baseline_top1) filter (where is_pie) as dense_top1_on_pie,
        max(baseline_top1) filter (where not is_pie) as dense_top1_on_nonpie,
        max(variant_top1) filter (where is_pie) as variant_top1_on_pie
    from pie_accuracy
    group by dataset, experiment, method, sparsity
),

corruption as (
    select
        parent as dataset,
        experiment,
        method,
        sparsity,
        count(*) as n_corruptions,
        avg(ce_vs_dense) as mean_ce_vs_dense,
        avg(ce_vs_alexnet) as mce_vs_alexnet
    from corruption_error
    group by parent, experiment, method, sparsity
),

final as (
    select
        a.dataset,
        a.experiment,
        a.method,
        a.sparsity,
        a.n_models,
        a.mean_top1,
        a.std_top1,
        i.n_significant_classes,
        i.n_classes_tested,
        p.n_pie,
        p.n_pie / p.n_images as pie_fraction,
        t.dense_top1_on_pie,
        t.dense_top1_on_nonpie,
        t.variant_top1_on_pie,
        c.n_corruptions,
        c.mean_ce_vs_dense,
        c.mce_vs_alexnet
    from accuracy as a
    left join impacted as i using (dataset, experiment, method, sparsity)
    left join pies as p using (dataset, experiment, method, sparsity)
    left join pie_top1 as t using (dataset, experiment, method, sparsity)
    left join corruption as c using (dataset, experiment, method, sparsity)
)

select * from final
