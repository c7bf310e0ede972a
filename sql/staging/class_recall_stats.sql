-- grain: one row per (dataset, variant population, class)
-- keys: dataset, experiment, method, level, class_id
-- materialised: stored
-- The per-model recall of the class in the dense (baseline) and in the variant population,
-- summarised; the inputs of the Welch t-tests of class_tstats (docs/definitions.md, per-class
-- impact).
-- *_n: models; *_mean_recall, *_std_recall: mean and sample standard deviation over the models
-- of the class's top-1 recall; *_mean_normalized: of recall minus the population's mean top-1
-- (a constant per population, so its standard deviation is *_std_recall). Only classes both
-- populations saw. delta_norm_recall: variant minus baseline mean normalised recall.
-- The baseline is the experiment's dense population (method 'dense', level 0: populations), the
-- variants every other population of it (pruned or quantised alike).
with recall as (
    select dataset, experiment, method, level, sparsity, class_id, recall, normalized_recall
    from class_recall
),

per_population as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        class_id,
        count(*) as n,
        avg(recall) as mean_recall,
        stddev_samp(recall) as std_recall,
        avg(normalized_recall) as mean_normalized
    from recall
    group by dataset, experiment, method, level, sparsity, class_id
),

final as (
    select
        v.dataset,
        v.experiment,
        v.method,
        v.level,
        v.sparsity,
        v.class_id,
        b.n as baseline_n,
        v.n as variant_n,
        b.mean_recall as baseline_mean_recall,
        v.mean_recall as variant_mean_recall,
        b.std_recall as baseline_std_recall,
        v.std_recall as variant_std_recall,
        b.mean_normalized as baseline_mean_normalized,
        v.mean_normalized as variant_mean_normalized,
        v.mean_normalized - b.mean_normalized as delta_norm_recall
    from per_population as v
    inner join per_population as b
        on b.dataset = v.dataset and b.experiment = v.experiment and b.class_id = v.class_id
        and b.method = 'dense' and b.level = 0
    where not (v.method = 'dense' and v.level = 0)
)

select * from final
