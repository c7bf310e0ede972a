-- label_votes: one row per (dataset, population, image, predicted label): how many of the
-- population's models predicted that label, and their share of the population.
-- keys: (dataset, experiment, method, sparsity, key, pred)
with preds as (
    select dataset, experiment, method, sparsity, key, pred
    from population_predictions
),

votes as (
    select dataset, experiment, method, sparsity, key, pred, count(*) as n_votes
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
