-- grain: one row per distinct image key across all datasets
-- keys: key
-- The key interned as an integer, so that the analysis groups and joins images on 4-byte integers,
-- not strings. key_id is unique too. A corrupted variant and its parent share a key, hence a
-- key_id.
-- Written only by store.insert_predictions (the one way predictions are stored); ids are never
-- reused or changed.
create table if not exists image_keys (
    key varchar primary key,
    key_id integer not null unique
);
