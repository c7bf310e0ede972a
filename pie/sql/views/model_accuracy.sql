-- model_accuracy: one row per (model, dataset) that has predictions.
-- keys: (model_id, dataset)
-- top1 / top5: fraction of the dataset's images whose true label is the prediction / is among
-- the five best; error = 1 - top1.
with preds as (
    select model_id, dataset, label, pred, top5
    from predictions
),

per_model as (
    select
        model_id,
        dataset,
        count(*) as n_images,
        count(*) filter (where pred = label) as n_correct,
        avg((pred = label)::double) as top1,
        avg(list_contains(top5, label)::double) as top5
    from preds
    group by model_id, dataset
),

final as (
    select
        p.model_id,
        p.dataset,
        m.experiment,
        m.method,
        m.target_sparsity as sparsity,
        m.seed,
        p.n_images,
        p.n_correct,
        p.top1,
        p.top5,
        1 - p.top1 as error
    from per_model as p
    inner join models as m using (model_id)
)

select * from final
