-- grain: one row per (dataset, variant population)
-- keys: dataset, experiment, method, level
-- Is the compressed (pruned, quantised) population's top-1 on this dataset (a clean set, one
-- corruption at one severity, ImageNet-A/R under the subset protocol) different from the dense
-- one's? Welch t-test over the models' top-1, dense (baseline) vs variant, called as
-- ttest_ind(baseline, variant, equal_var=False): t_stat > 0 when the compressed population is
-- less accurate (the sign of class_tstats).
-- Written by `pie analyze` from view robustness; read only while the analysis is fresh. `pie
-- infer` deletes the rows of an experiment when it replaces predictions of one of its models
-- (q-values are over the experiment's datasets, so every row of it described the old ones).
-- Population: (experiment, method, level); sparsity: its target sparsity (model_populations).
-- Derived data, rewritten whole by every `pie analyze` and stale as soon as pie's SQL changes
-- (analysis_inputs reads the schema digest): it is dropped and created again in this file's shape
-- whenever the schema is brought up to date, so a database from an older pie gets the new key
-- (populations keyed by level) without a schema version of its own.
drop table if exists robustness_tstats;
create table robustness_tstats (
    dataset varchar not null,
    experiment varchar not null,
    method varchar not null,
    level double not null,
    sparsity double not null,
    kind varchar not null,        -- clean | corrupted | natural_adversarial | rendition | export
    origin varchar,               -- released | generated | export
    parent varchar,               -- the clean dataset of a corrupted variant
    corruption varchar,
    severity integer,
    baseline_n integer not null,  -- dense models evaluated on the dataset
    variant_n integer not null,
    baseline_mean_top1 double,
    variant_mean_top1 double,
    baseline_std_top1 double,     -- sample std over the models
    variant_std_top1 double,
    delta_top1 double,            -- variant_mean_top1 - baseline_mean_top1
    t_stat double,                -- ttest_ind(baseline, variant): > 0 = pruned less accurate
    welch_df double,
    p_value double,               -- two-sided Welch (unequal variances)
    q_value double,               -- Benjamini-Hochberg over the datasets of the population
    hedges_g double,
    significant boolean not null, -- p_value (or q_value, analyze.significance_on) <= alpha
    significance_on varchar not null,
    alpha double not null,
    primary key (dataset, experiment, method, level)
);
