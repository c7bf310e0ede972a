-- grain: one row per analysis setting the views read (written by `pie analyze`)
-- keys: name
-- Views read the analysis settings only through view analysis_settings (one column each, with
-- its default); mode_tie_break: 'largest' (the reference), 'smallest' or 'exclude';
-- schema_version: the shape of these tables (pie.store.SCHEMA_VERSION), set once when created;
-- predictions_version: writes to the predictions so far (pie.store.count_write), one of the
-- analysis inputs (view analysis_inputs).
create table if not exists settings (
    name varchar primary key,
    value varchar not null
);
