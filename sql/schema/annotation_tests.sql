-- grain: one row per (dataset, variant population, annotation source, name, value)
-- keys: dataset, experiment, method, level, source, name, value
-- Are the PIEs of a population richer in an annotation value than its other images? Among the
-- population's images annotated for (source, name) (view annotation_counts), Fisher's exact test
-- of the 2x2 table [[PIE with the value, PIE with another value], [non-PIE with the value,
-- non-PIE with another value]], as scipy.stats.fisher_exact computes it (two-sided).
-- Written by `pie annotate` (when the analysis is up to date) and by `pie analyze`
-- (analytics.annotation_tests); read through view pie_annotations. Population: (experiment,
-- method, level); sparsity: its target sparsity (model_populations).
-- Derived data, rewritten whole by `pie analyze` and stale as soon as pie's SQL changes
-- (analysis_inputs reads the schema digest): it is dropped and created again in this file's shape
-- whenever the schema is brought up to date, so a database from an older pie gets the new key
-- (populations keyed by level) without a schema version of its own.
drop table if exists annotation_tests;
create table annotation_tests (
    dataset varchar not null,
    experiment varchar not null,
    method varchar not null,
    level double not null,
    sparsity double not null,
    source varchar not null,
    name varchar not null,
    value varchar not null,
    n_pie_with_value bigint not null,
    n_pie bigint not null,               -- PIEs annotated for (source, name)
    n_non_pie_with_value bigint not null,
    n_non_pie bigint not null,           -- non-PIEs annotated for (source, name)
    odds_ratio double,   -- the sample odds ratio (PIE odds of the value over non-PIE odds);
                         -- infinite when no non-PIE or no PIE lacks it, null when undefined
    p_value double,      -- Fisher's exact test, two-sided
    q_value double,      -- Benjamini-Hochberg over the values of (population, source, name)
    significant boolean not null,  -- p_value (or q_value, setting significance_on) <= alpha
    significance_on varchar not null,
    alpha double not null,
    primary key (dataset, experiment, method, level, source, name, value)
);
