-- model_class_counts: one row per (model, dataset, class present in the dataset): the one scan
-- of `predictions` that model_accuracy and class_recall are summed from.
-- keys: (model_id, dataset, class_id)
-- n_correct: images of the class whose top-1 is the label; n_top5: whose top-5 holds it.
with preds as (
    select model_id, dataset, label, pred, top5
    from predictions
),

final as (
    select
        model_id,
        dataset,
        label as class_id,
        count(*) as n_images,
        count(*) filter (where pred = label) as n_correct,
        count(*) filter (where list_contains(top5, label)) as n_top5
    from preds
    group by model_id, dataset, label
)

select * from final
