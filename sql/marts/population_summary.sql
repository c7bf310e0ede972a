-- grain: one row per (dataset, population)
-- keys: dataset, experiment, method, level
-- The headline numbers of the study, every population (experiment, method, level) side by side:
-- the dense one, pruned ones and quantised ones (quantised: level is a bit width, its exemplars
-- are CIEs; populations), each compared with its experiment's dense population.
-- mean/std top-1 over the population's models; classes significantly impacted (class_tstats,
-- as of the last `pie analyze`); PIE count (pie_fraction over the images decided: the tie rule
-- 'exclude' leaves tied ones out), how many of them a tied mode decided (pie.tie_decided)
-- and the dense population's top-1 on PIEs and on the rest; per origin of the corrupted variants
-- of this (clean) dataset (released | generated, never mixed; mean_corruption_error): benchmark
-- corruptions present, mCE vs dense (null unless all 15 at all 5 severities), CE vs dense
-- averaged over the benchmark corruptions present (not an mCE unless complete), and for released
-- ImageNet-1k files the mCE and relative mCE vs AlexNet.
-- What the compression buys, over all the population's models (models; a model that recorded
-- none counts as unknown, not 0): mean parameters, non-zero parameters and bytes of the saved
-- model on disk, and each relative to the dense population's mean (*_vs_dense, 1.0 for dense).
with accuracy as (
    select dataset, experiment, method, level, sparsity, n_models, mean_top1, std_top1
    from robustness
),

population as (
    select experiment, method, level, quantised
    from populations
),

sizes as (
    select
        p.experiment,
        p.method,
        p.level,
        avg(nullif(m.params, 0)) as mean_params,
        avg(nullif(m.nonzero_params, 0)) as mean_nonzero_params,
        avg(nullif(m.size_bytes, 0)) as mean_size_bytes
    from model_populations as p
    inner join models as m using (model_id)
    group by p.experiment, p.method, p.level
),

sizes_vs_dense as (
    select
        s.*,
        s.mean_params / d.mean_params as params_vs_dense,
        s.mean_nonzero_params / d.mean_nonzero_params as nonzero_params_vs_dense,
        s.mean_size_bytes / d.mean_size_bytes as size_vs_dense
    from sizes as s
    left join sizes as d
        on d.experiment = s.experiment and d.method = 'dense' and d.level = 0
),

impacted as (
    select
        dataset,
        experiment,
        method,
        level,
        count(*) filter (where significant) as n_significant_classes,
        count(*) as n_classes_tested
    from class_tstats
    group by dataset, experiment, method, level
),

pies as (
    select
        dataset,
        experiment,
        method,
        level,
        count(*) filter (where is_pie) as n_pie,
        count(*) filter (where is_pie and tie_decided) as n_pie_tie_decided,
        count(is_pie) as n_images
    from pie
    group by dataset, experiment, method, level
),

pie_top1 as (
    select
        dataset,
        experiment,
        method,
        level,
        max(baseline_top1) filter (where is_pie) as dense_top1_on_pie,
        max(baseline_top1) filter (where not is_pie) as dense_top1_on_nonpie,
        max(variant_top1) filter (where is_pie) as variant_top1_on_pie
    from pie_accuracy
    group by dataset, experiment, method, level
),

corruption as (
    select
        parent as dataset,
        experiment,
        method,
        level,
        max(n_corruptions) filter (where origin = 'released') as released_n_corruptions,
        max(mce_vs_dense) filter (where origin = 'released') as released_mce_vs_dense,
        max(mean_ce_vs_dense_present) filter (where origin = 'released')
            as released_mean_ce_vs_dense_present,
        max(mce_vs_alexnet) filter (where origin = 'released') as released_mce_vs_alexnet,
        max(relative_mce_vs_alexnet) filter (where origin = 'released')
            as released_relative_mce_vs_alexnet,
        max(n_corruptions) filter (where origin = 'generated') as generated_n_corruptions,
        max(mce_vs_dense) filter (where origin = 'generated') as generated_mce_vs_dense,
        max(mean_ce_vs_dense_present) filter (where origin = 'generated')
            as generated_mean_ce_vs_dense_present
    from mean_corruption_error
    group by parent, experiment, method, level
),

final as (
    select
        a.dataset,
        a.experiment,
        a.method,
        a.level,
        a.sparsity,
        n.quantised,
        a.n_models,
        a.mean_top1,
        a.std_top1,
        i.n_significant_classes,
        i.n_classes_tested,
        p.n_pie,
        p.n_pie / p.n_images as pie_fraction,
        p.n_pie_tie_decided,
        t.dense_top1_on_pie,
        t.dense_top1_on_nonpie,
        t.variant_top1_on_pie,
        c.released_n_corruptions,
        c.released_mce_vs_dense,
        c.released_mean_ce_vs_dense_present,
        c.released_mce_vs_alexnet,
        c.released_relative_mce_vs_alexnet,
        c.generated_n_corruptions,
        c.generated_mce_vs_dense,
        c.generated_mean_ce_vs_dense_present,
        z.mean_params,
        z.mean_nonzero_params,
        z.mean_size_bytes,
        z.params_vs_dense,
        z.nonzero_params_vs_dense,
        z.size_vs_dense
    from accuracy as a
    left join impacted as i using (dataset, experiment, method, level)
    left join pies as p using (dataset, experiment, method, level)
    left join pie_top1 as t using (dataset, experiment, method, level)
    left join corruption as c using (dataset, experiment, method, level)
    left join population as n using (experiment, method, level)
    left join sizes_vs_dense as z using (experiment, method, level)
)

select * from final
