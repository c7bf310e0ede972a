-- label_votes: one row per (dataset, population, image, predicted label): how many of the
-- population's models predicted that label, and their share of the population. The one scan of
-- the predictions that modal_labels, pie and pie_accuracy are counted from.
-- keys: (dataset, experiment, method, sparsity, key, pred)
-- label: the image's true label; sum_p_label: those models' summed probability of the true label.
with preds as (
    select dataset, experiment, method, sparsity, key, label, pred, p_label
    from population_predictions
),

votes as (
    select
        dataset,
        experiment,
        method,
        sparsity,
        key,
        pred,
        any_value(label) as label,
        count(*) as n_votes,
        sum(p_label) as sum_p_label
    from preds
    group by dataset, experiment, method, sparsity, key, pred
),

final as (
    select
        *,
        n_votes / sum(n_votes) over (
            partition by dataset, experiment, method, sparsity, key
        ) as share
    from votes
)

select * from final
