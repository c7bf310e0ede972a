-- settings: one row per analysis setting the views read (written by `pie analyze`).
-- key: name. mode_tie_break: 'largest' (the reference) or 'smallest' class id wins a tied mode;
-- schema_version: the shape of these tables (pie.store.SCHEMA_VERSION), set once when created.
create table if not exists settings (
    name varchar primary key,
    value varchar not null
);
insert or ignore into settings values ('mode_tie_break', 'largest');
