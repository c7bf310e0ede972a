-- grain: one row per (model, dataset, class present in the dataset)
-- keys: model_id, dataset, class_id
-- recall: the model's top-1 recall on the images of that class. normalized_recall: recall minus
-- the mean top-1 of the model's population on the dataset (docs/definitions.md, per-class impact);
-- population = (experiment, method, level).
with per_class as (
    select model_id, dataset, class_id, n_images, n_correct / n_images as recall
    from model_class_counts
),

accuracy as (
    select model_id, dataset, experiment, method, level, sparsity, top1
    from model_accuracy
),

population as (
    select
        dataset,
        experiment,
        method,
        level,
        sparsity,
        avg(top1) as population_top1
    from accuracy
    group by dataset, experiment, method, level, sparsity
),

final as (
    select
        a.model_id,
        c.dataset,
        c.class_id,
        a.experiment,
        a.method,
        a.level,
        a.sparsity,
        c.n_images,
        c.recall,
        p.population_top1,
        c.recall - p.population_top1 as normalized_recall
    from per_class as c
    inner join accuracy as a using (model_id, dataset)
    inner join population as p using (dataset, experiment, method, level, sparsity)
)

select * from final
