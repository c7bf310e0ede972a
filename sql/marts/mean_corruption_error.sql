-- grain: one row per (population, clean parent dataset, origin)
-- keys: experiment, method, level, parent, origin
-- The mean corruption error (mCE) over the 15 ImageNet-C benchmark corruptions (corruption_error
-- rows with benchmark = true; the 4 extra ones never enter it), Hendrycks & Dietterich 2019.
-- n_corruptions: benchmark corruptions present (any severities); n_complete: those with all five
-- severities; n_extra: extra corruptions present (reported in corruption_error only).
-- complete: all 15 at all 5 severities. The mCEs are null unless complete:
--   mce_vs_dense, relative_mce_vs_dense        mean of ce_vs_dense / relative_ce_vs_dense
--   mce_vs_alexnet, relative_mce_vs_alexnet    mean of the AlexNet-normalised ones, only for
--                                              released ImageNet-1k files (see corruption_error)
-- mean_ce_vs_dense_present: ce_vs_dense averaged over the benchmark corruptions present, at the
-- severities present: NOT an mCE unless complete (then it equals mce_vs_dense).
with ce as (
    select *
    from corruption_error
),

per_origin as (
    select
        experiment,
        method,
        level,
        sparsity,
        parent,
        origin,
        count(*) filter (where benchmark) as n_corruptions,
        count(*) filter (where benchmark and complete) as n_complete,
        count(*) filter (where not benchmark) as n_extra,
        avg(ce_vs_dense) filter (where benchmark) as mean_ce_vs_dense_present,
        avg(ce_vs_dense) filter (where benchmark and complete) as mean_ce_vs_dense,
        count(ce_vs_dense) filter (where benchmark and complete) as n_ce_vs_dense,
        avg(relative_ce_vs_dense) filter (where benchmark and complete)
            as mean_relative_ce_vs_dense,
        count(relative_ce_vs_dense) filter (where benchmark and complete)
            as n_relative_ce_vs_dense,
        avg(ce_vs_alexnet) filter (where benchmark) as mean_ce_vs_alexnet,
        count(ce_vs_alexnet) filter (where benchmark) as n_ce_vs_alexnet,
        avg(relative_ce_vs_alexnet) filter (where benchmark) as mean_relative_ce_vs_alexnet,
        count(relative_ce_vs_alexnet) filter (where benchmark) as n_relative_ce_vs_alexnet
    from ce
    group by experiment, method, level, sparsity, parent, origin
),

final as (
    select
        experiment,
        method,
        level,
        sparsity,
        parent,
        origin,
        n_corruptions,
        n_complete,
        n_extra,
        n_complete = 15 as complete,
        case when n_ce_vs_dense = 15 then mean_ce_vs_dense end as mce_vs_dense,
        case when n_relative_ce_vs_dense = 15 then mean_relative_ce_vs_dense end
            as relative_mce_vs_dense,
        case when n_ce_vs_alexnet = 15 then mean_ce_vs_alexnet end as mce_vs_alexnet,
        case when n_relative_ce_vs_alexnet = 15 then mean_relative_ce_vs_alexnet end
            as relative_mce_vs_alexnet,
        mean_ce_vs_dense_present
    from per_origin
)

select * from final
