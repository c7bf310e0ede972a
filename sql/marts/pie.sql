-- grain: one row per (dataset, variant population, image)
-- keys: dataset, experiment, method, level, key
-- Is the image a pruning identified exemplar, i.e. does the variant population's modal label differ
-- from the dense one's? (A compression identified exemplar, CIE, when the variant is quantised:
-- populations.quantised.)
-- Variant populations: every population (experiment, method, level) of the experiment but its
-- dense one (method 'dense', level 0: populations), which is the baseline; a quantised population
-- (sparsity 0, level = its bit width) is a variant too. The true label plays no part in is_pie. l1_distance is the taxicab distance
-- between the two populations' distributions of predicted labels, in [0, 2] (the CIE ranking of
-- Hooker et al. 2020), computed as 2 - 2 * sum over classes of min(share_variant, share_dense),
-- the sum taken over integer vote counts scaled to a common denominator, so that it is exact and
-- the same in every run (a float sum's value depends on the order parallel threads add in).
-- tie_decided: the dense or the variant population's mode was chosen by the tie-break rule (two or
-- more labels shared its top vote count; modal_labels.tied), so is_pie hangs on that rule; under
-- the rule 'exclude' (setting mode_tie_break) such an image is neither PIE nor non-PIE: is_pie is
-- null. cie_rank: 1 for the image whose label distributions differ most (largest l1_distance,
-- ties by key) within its (dataset, population): the CIE ranking, any compression method.
-- population_id, key_id: the integer ids the analysis joins on (populations, image_keys).
-- pie_unranked (what `pie analyze` stores) with the names and keys; the ranking is a window,
-- which DuckDB skips when a query does not use cie_rank.
with unranked as (
    select *
    from pie_unranked
),

named as (
    select
        u.dataset,
        p.experiment,
        p.method,
        p.level,
        p.sparsity,
        k.key,
        u.* exclude (dataset, population_id, key_id),
        u.population_id,
        u.key_id
    from unranked as u
    inner join populations as p using (population_id)
    inner join image_keys as k using (key_id)
),

final as (
    select
        *,
        row_number() over (
            partition by dataset, population_id order by l1_distance desc, key
        ) as cie_rank
    from named
)

select * from final
