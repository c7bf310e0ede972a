-- pie_accuracy: one row per (dataset, variant population, subset), subset = PIEs or the rest:
-- how many images, and the mean top-1 of the dense and of the variant population on them
-- (mean over models and images).
-- keys: (dataset, experiment, method, sparsity, is_pie)
with membership as (
    select dataset, experiment, method, sparsity, key, is_pie
    from pie
),

correct as (
    select dataset, experiment, method, sparsity, key, correct
    from population_predictions
),

baseline as (
    select s.dataset, s.experiment, s.method, s.sparsity, s.is_pie,
        avg(c.correct) as baseline_top1
    from membership as s
    inner join correct as c
        on c.dataset = s.dataset and c.experiment = s.experiment and c.key = s.key
        and c.sparsity = 0
    group by s.dataset, s.experiment, s.method, s.sparsity, s.is_pie
),

variant as (
    select s.dataset, s.experiment, s.method, s.sparsity, s.is_pie,
        avg(c.correct) as variant_top1
    from membership as s
    inner join correct as c
        on c.dataset = s.dataset and c.experiment = s.experiment and c.key = s.key
        and c.method = s.method and c.sparsity = s.sparsity
    group by s.dataset, s.experiment, s.method, s.sparsity, s.is_pie
),

counts as (
    select dataset, experiment, method, sparsity, is_pie, count(*) as n_images
    from membership
    group by dataset, experiment, method, sparsity, is_pie
),

final as (
    select
        n.dataset,
        n.experiment,
        n.method,
        n.sparsity,
        n.is_pie,
        n.n_images,
        b.baseline_top1,
        v.variant_top1
    from counts as n
    inner join baseline as b using (dataset, experiment, method, sparsity, is_pie)
    inner join variant as v using (dataset, experiment, method, sparsity, is_pie)
)

select * from final
