-- grain: one row per (dataset, population, class)
-- keys: dataset, experiment, method, level, class_id
-- Does compression (pruning, quantisation) hurt this class more than the model's overall accuracy
-- drop? Welch t-test of normalised recall (class recall minus the population's mean top-1)
-- between the dense and the variant population, called as the reference does:
-- ttest_ind(baseline, variant, equal_var=False), so t_stat > 0 when the class loses normalised
-- recall under compression; delta_norm_recall (variant minus baseline mean normalised recall, < 0
-- for such a class) is the plain reading of the same difference.
-- Written by `pie analyze` from view class_recall_stats; `pie infer` deletes the rows of an
-- experiment's dataset when it replaces predictions there. Population: (experiment, method,
-- level); sparsity: its target sparsity (model_populations).
-- Derived data, rewritten whole by every `pie analyze` and stale as soon as pie's SQL changes
-- (analysis_inputs reads the schema digest): it is dropped and created again in this file's shape
-- whenever the schema is brought up to date, so a database from an older pie gets the new key
-- (populations keyed by level) without a schema version of its own.
drop table if exists class_tstats;
create table class_tstats (
    dataset varchar not null,
    experiment varchar not null,
    method varchar not null,
    level double not null,
    sparsity double not null,
    class_id integer not null,
    baseline_n integer not null,   -- models in the dense population
    variant_n integer not null,    -- models in the variant population
    baseline_mean_recall double,
    variant_mean_recall double,
    baseline_std_recall double,    -- sample std over models (= that of normalised recall)
    variant_std_recall double,
    baseline_mean_normalized double,
    variant_mean_normalized double,
    delta_norm_recall double,  -- variant_mean_normalized - baseline_mean_normalized
    t_stat double,             -- ttest_ind(baseline, variant): > 0 = the class lost normalised
                               -- recall under pruning (the reference's sign)
    welch_df double,           -- Welch-Satterthwaite degrees of freedom
    p_value double,            -- two-sided Welch (unequal variances)
    q_value double,            -- Benjamini-Hochberg over the classes of the population
    hedges_g double,           -- (baseline - variant mean normalised recall) / pooled std,
                               -- small-sample corrected; same sign as t_stat
    significant boolean not null,  -- p_value <= alpha (the reference), or q_value <= alpha
    significance_on varchar not null default 'p',  -- 'p' or 'q': which one `significant` tests
    alpha double not null default 0.05,
    primary key (dataset, experiment, method, level, class_id)
);
