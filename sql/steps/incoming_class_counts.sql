-- grain: one row per (model, dataset, class) of the predictions being stored
-- keys: model_id, dataset, class_id
-- Not a relation of the database: store.insert_predictions runs it on its temporary table
-- `_incoming` (the rows being stored) and puts the result in place of those keys' rows in
-- model_class_counts. The counts of the incoming rows, summed with any the same (model, dataset,
-- class) already has.
with incoming as (
    select
        model_id,
        dataset,
        label as class_id,
        count(*) as n_images,
        count(*) filter (where pred = label) as n_correct,
        count(*) filter (where list_contains(top5, label)) as n_top5
    from _incoming
    group by model_id, dataset, label
),

final as (
    select
        i.model_id,
        i.dataset,
        i.class_id,
        i.n_images + coalesce(m.n_images, 0) as n_images,
        i.n_correct + coalesce(m.n_correct, 0) as n_correct,
        i.n_top5 + coalesce(m.n_top5, 0) as n_top5
    from incoming as i
    left join model_class_counts as m using (model_id, dataset, class_id)
)

select * from final
