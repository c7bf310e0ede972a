-- grain: one row per (population, clean parent dataset, origin, corruption)
-- keys: experiment, method, level, parent, origin, corruption
-- Summed over the severities present (Hendrycks & Dietterich 2019). E = a population's mean top-1
-- error.
-- origin: released (e.g. the published ImageNet-C files) or generated (`pie corrupt`); the two
-- variants of one parent are never mixed. benchmark: one of the 15 ImageNet-C corruptions (the
-- 4 extra ones are false and never enter an mCE). complete: all five severities 1-5 present.
--   ce_vs_dense            = sum_s E(pop, s) / sum_s E(dense, s)            (1.0 for dense)
--   relative_ce_vs_dense   = sum_s (E(pop, s) - E(pop, clean)) / sum_s (E(dense, s) - E(dense, clean))
--   ce_vs_alexnet          = sum_s E(pop, s) / sum_s E(AlexNet, s)
--   relative_ce_vs_alexnet = sum_s (E(pop, s) - E(pop, clean)) / sum_s (E(AlexNet, s) - E(AlexNet, clean))
-- The AlexNet ones only where origin = 'released', the parent's label space has AlexNet references
-- (corruption_reference: ImageNet-1k) and the corruption is complete; sum_s E(AlexNet, s) = 5 x
-- the published average. The vs-dense sums run over the severities both populations have. Dense:
-- the experiment's population of method 'dense', level 0 (populations).
with benchmark as (
    select unnest([
        'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
        'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
        'elastic_transform', 'pixelate', 'jpeg_compression'
    ]) as corruption
),

corrupted as (
    select *
    from robustness
    where kind = 'corrupted'
),

dense_clean as (
    select dataset as parent, experiment, 1 - mean_top1 as dense_clean_error
    from robustness
    where method = 'dense' and level = 0
),

joined as (
    select c.*, 1 - c.clean_top1 as clean_error, d.dense_clean_error
    from corrupted as c
    left join dense_clean as d using (parent, experiment)
),

per_corruption as (
    select
        experiment,
        method,
        level,
        sparsity,
        parent,
        origin,
        corruption,
        count(distinct severity) as n_severities,
        count(distinct severity) filter (where severity between 1 and 5) = 5 as complete,
        avg(mean_error) as mean_error,
        any_value(clean_error) as clean_error,
        sum(mean_error) as sum_error,
        sum(mean_error - clean_error) as sum_error_over_clean,
        sum(mean_error) filter (where dense_error is not null)
        / nullif(sum(dense_error), 0) as ce_vs_dense,
        sum(mean_error - clean_error) filter (where dense_error is not null)
        / nullif(sum(dense_error - dense_clean_error), 0) as relative_ce_vs_dense
    from joined
    group by experiment, method, level, sparsity, parent, origin, corruption
),

alexnet as (
    select d.name as parent, r.corruption, r.mean_error as alexnet_mean_error
    from corruption_reference as r
    inner join datasets as d on d.label_space = r.label_space
    where r.model = 'alexnet'
),

final as (
    select
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        p.parent,
        p.origin,
        p.corruption,
        b.corruption is not null as benchmark,
        p.n_severities,
        p.complete,
        p.mean_error,
        p.clean_error,
        p.ce_vs_dense,
        p.relative_ce_vs_dense,
        case when p.origin = 'released' and p.complete then
            p.sum_error / (5 * a.alexnet_mean_error)
        end as ce_vs_alexnet,
        case when p.origin = 'released' and p.complete then
            p.sum_error_over_clean / (5 * (a.alexnet_mean_error - c.alexnet_mean_error))
        end as relative_ce_vs_alexnet
    from per_corruption as p
    left join benchmark as b on b.corruption = p.corruption
    left join alexnet as a on a.parent = p.parent and a.corruption = p.corruption
    left join alexnet as c on c.parent = p.parent and c.corruption = 'clean'
)

select * from final
