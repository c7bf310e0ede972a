-- grain: one row per (dataset, population, image, predicted label)
-- keys: dataset, population_id, key_id, pred
-- materialised: transient
-- How many of the population's models predicted that label. The one scan of the predictions that
-- modal_labels, pie and pie_accuracy are counted from; label_votes shows it with names and shares.
-- population_id: as in model_populations; key_id: the key interned (image_keys). Counted on these
-- integers rather than on the names and the key string (faster). label: the image's true label;
-- sum_p_label: those models' summed probability of the true label.
with votes as (
    select
        p.dataset,
        m.population_id,
        p.key_id,
        p.pred,
        any_value(p.label) as label,
        count(*) as n_votes,
        sum(p.p_label) as sum_p_label
    from predictions as p
    inner join model_populations as m using (model_ord)
    group by p.dataset, m.population_id, p.key_id, p.pred
),

final as (
    select dataset, population_id, key_id, pred, label, n_votes, sum_p_label
    from votes
)

select * from final
