-- grain: one row per relation `pie analyze` materialised or table it wrote from them
-- keys: name
-- A relation is materialised into schema `materialised` (a table of the same name, built from the
-- view of that name, whose header says `-- materialised: stored`); the tables it writes in the
-- main schema from them are class_tstats and robustness_tstats (pie.materialised.TABLES).
-- fingerprint: view analysis_inputs when it was built; the table is read in place of the view
-- only while the current fingerprint is the same (pie.materialised).
create table if not exists materialisations (
    name varchar primary key,
    fingerprint varchar not null,
    n_rows bigint not null,
    seconds double not null,
    built_at timestamp default current_timestamp
);
