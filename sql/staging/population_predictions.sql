-- grain: one row per (model, dataset, image)
-- keys: model_id, dataset, key
-- A prediction with the population its model belongs to, population = (experiment, method,
-- level) (model_populations; sparsity: the population's target sparsity).
with preds as (
    select model_id, dataset, key, label, pred, p_label
    from predictions
),

final as (
    select
        p.model_id,
        p.dataset,
        p.key,
        m.experiment,
        m.method,
        m.level,
        m.sparsity,
        p.label,
        p.pred,
        p.p_label,
        (p.pred = p.label)::double as correct
    from preds as p
    inner join model_populations as m using (model_id)
)

select * from final
