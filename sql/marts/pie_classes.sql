-- grain: one row per (dataset, variant population, true class)
-- keys: dataset, experiment, method, level, class_id
-- materialised: stored
-- How many of the class's images are PIEs, and how the dense and the variant population's modes
-- fare on them.
-- pie_fraction: PIEs over the class's images decided (the tie rule 'exclude' leaves tied images
-- out: n_excluded); mean_l1_distance over all the class's images.
with membership as (
    select dataset, experiment, method, level, sparsity, label, is_pie, l1_distance, baseline_correct,
        variant_correct
    from pie
),

final as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        label as class_id,
        count(*) as n_images,
        count(*) filter (where is_pie) as n_pie,
        count(*) filter (where is_pie is null) as n_excluded,
        count(*) filter (where is_pie) / nullif(count(is_pie), 0) as pie_fraction,
        count(*) filter (where is_pie and baseline_correct) as n_pie_dense_mode_correct,
        count(*) filter (where is_pie and variant_correct) as n_pie_variant_mode_correct,
        avg(l1_distance) as mean_l1_distance
    from membership
    group by dataset, experiment, method, level, sparsity, label
)

select * from final
