-- grain: one row per model id that has had predictions stored
-- keys: model_id
-- The id interned as an integer, so that the analysis joins the predictions to their models on 4
-- bytes, not a string. model_ord is unique too. Written only by store.insert_predictions; an
-- ordinal is never reused or changed (a retrained model keeps its id, hence its ordinal).
create table if not exists model_ords (
    model_id varchar primary key,
    model_ord integer not null unique
);
