-- grain: one row per (model, dataset) that has predictions
-- keys: model_id, dataset
-- materialised: stored
-- top1 / top5: fraction of the dataset's images whose true label is the prediction / is among
-- the five best; error = 1 - top1. experiment, method, level, sparsity: the model's population
-- (model_populations; sparsity: the population's target sparsity).
with counts as (
    select model_id, dataset, n_images, n_correct, n_top5
    from model_class_counts
),

per_model as (
    select
        model_id,
        dataset,
        sum(n_images)::bigint as n_images,
        sum(n_correct)::bigint as n_correct,
        sum(n_correct) / sum(n_images) as top1,
        sum(n_top5) / sum(n_images) as top5
    from counts
    group by model_id, dataset
),

final as (
    select
        p.model_id,
        p.dataset,
        m.experiment,
        m.method,
        m.level,
        m.sparsity,
        s.seed,
        p.n_images,
        p.n_correct,
        p.top1,
        p.top5,
        1 - p.top1 as error
    from per_model as p
    inner join model_populations as m using (model_id)
    inner join models as s using (model_id)
)

select * from final
