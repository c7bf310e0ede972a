-- grain: one row per (dataset, variant population, annotation source, name, value)
-- keys: dataset, experiment, method, level, source, name, value
-- Are a population's PIEs richer in an annotation value (a known label error, a human study's
-- label, an image quality bin) than its other images? The tests of annotation_tests with the
-- two shares side by side: share_pie = n_pie_with_value / n_pie (the PIEs annotated for the
-- name), share_non_pie the same among the non-PIEs.
with tests as (
    select *
    from annotation_tests
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
        n_pie,
        n_pie_with_value / nullif(n_pie, 0) as share_pie,
        n_non_pie_with_value,
        n_non_pie,
        n_non_pie_with_value / nullif(n_non_pie, 0) as share_non_pie,
        odds_ratio,
        p_value,
        q_value,
        significant,
        significance_on,
        alpha
    from tests
)

select * from final
