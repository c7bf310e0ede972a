-- class_tstats: one row per (dataset, population, class): does pruning hurt this class more
-- than the model's overall accuracy drop? Welch t-test of normalised recall (class recall
-- minus the population's mean top-1) between the dense and the variant population, called as
-- the reference does: ttest_ind(baseline, variant, equal_var=False), so t_stat > 0 when the class
-- loses normalised recall under pruning; delta_norm_recall (variant minus baseline mean
-- normalised recall, < 0 for such a class) is the plain reading of the same difference.
-- key: (dataset, experiment, method, sparsity, class_id)
create table if not exists class_tstats (
    dataset varchar not null,
    experiment varchar not null,
    method varchar not null,
    sparsity double not null,
    class_id integer not null,
    baseline_n integer not null,
    variant_n integer not null,
    baseline_mean_recall double,
    variant_mean_recall double,
    baseline_mean_normalized double,
    variant_mean_normalized double,
    delta_norm_recall double,  -- variant_mean_normalized - baseline_mean_normalized
    t_stat double,             -- ttest_ind(baseline, variant): > 0 = the class lost normalised
                               -- recall under pruning (the reference's sign)
    p_value double,            -- two-sided Welch (unequal variances)
    q_value double,            -- Benjamini-Hochberg over the classes of the population
    significant boolean not null,  -- p_value <= alpha (no correction, as the reference)
    primary key (dataset, experiment, method, sparsity, class_id)
);
