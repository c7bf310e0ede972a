-- grain: one row per (dataset, variant population)
-- keys: dataset, experiment, method, level
-- A variant population's row of view robustness beside the dense population's on the same
-- dataset: the inputs of the Welch t-tests of robustness_tstats (analytics.robustness).
-- delta_top1: variant minus baseline mean top-1. The baseline is the experiment's dense population
-- (method 'dense', level 0: populations), the variants every other population of it.
-- Evaluation sets only: a training set's top-1 measures fit, not robustness, and its test would
-- join the q-value family of the experiment's evaluation sets (changing their q-values).
with accuracy as (
    select
        dataset, experiment, method, level, sparsity, kind, origin, parent, corruption, severity,
        n_models, mean_top1, std_top1
    from robustness
    where dataset not in (select name from datasets where split = 'train')
),

final as (
    select
        v.dataset,
        v.experiment,
        v.method,
        v.level,
        v.sparsity,
        v.kind,
        v.origin,
        v.parent,
        v.corruption,
        v.severity,
        b.n_models as baseline_n,
        v.n_models as variant_n,
        b.mean_top1 as baseline_mean_top1,
        v.mean_top1 as variant_mean_top1,
        b.std_top1 as baseline_std_top1,
        v.std_top1 as variant_std_top1,
        v.mean_top1 - b.mean_top1 as delta_top1
    from accuracy as v
    inner join accuracy as b
        on b.dataset = v.dataset and b.experiment = v.experiment
        and b.method = 'dense' and b.level = 0
    where not (v.method = 'dense' and v.level = 0)
)

select * from final
