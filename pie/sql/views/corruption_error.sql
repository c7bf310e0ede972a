-- corruption_error: one row per (population, clean dataset, corruption), summed over the
-- severities present (Hendrycks & Dietterich 2019), E = the population's mean top-1 error:
--   ce_vs_dense          = sum_s E(pop, s) / sum_s E(dense, s)              (1.0 for dense)
--   relative_ce_vs_dense = sum_s (E(pop, s) - E(pop, clean)) / sum_s (E(dense, s) - E(dense, clean))
--   ce_vs_alexnet        = sum_s E(pop, s) / sum_s E(AlexNet, s), only where the label space has
--                          AlexNet references (ImageNet-1k) and all five severities are present.
-- keys: (experiment, method, sparsity, parent, corruption)
with corrupted as (
    select *
    from robustness
    where kind = 'corrupted'
),

dense_clean as (
    select dataset as parent, experiment, 1 - mean_top1 as dense_clean_error
    from robustness
    where sparsity = 0
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
        sparsity,
        parent,
        corruption,
        count(*) as n_severities,
        avg(mean_error) as mean_error,
        sum(mean_error) / nullif(sum(dense_error), 0) as ce_vs_dense,
        sum(mean_error - clean_error)
        / nullif(sum(dense_error - dense_clean_error), 0) as relative_ce_vs_dense
    from joined
    group by experiment, method, sparsity, parent, corruption
),

alexnet as (
    select d.name as parent, r.corruption, r.mean_error as alexnet_mean_error
    from corruption_reference as r
    inner join datasets as d on d.label_space = r.label_space
    where r.model = 'alexnet'
),

final as (
    select
        p.*,
        case when p.n_severities = 5 then p.mean_error / a.alexnet_mean_error end
            as ce_vs_alexnet
    from per_corruption as p
    left join alexnet as a using (parent, corruption)
)

select * from final
