-- settings: one row per analysis setting the views read (written by `pie analyze`).
-- key: name. mode_tie_break: 'largest' (the reference) or 'smallest' class id wins a tied mode;
-- schema_version: the shape of these tables (pie.store.SCHEMA_VERSION), set once when created;
-- predictions_version: writes to the predictions so far (pie.store.count_write), one of the
-- analysis inputs (view analysis_inputs).
create table if not exists settings (
    name varchar primary key,
    value varchar not null
);
insert or ignore into settings values ('mode_tie_break', 'largest');
