-- grain: one row per (model, dataset, class present in the dataset)
-- keys: model_id, dataset, class_id
-- How that model's predictions on the class's images came out; what model_accuracy and class_recall
-- are summed from.
-- n_correct: images whose top-1 is the label; n_top5: whose top-5 holds it. Counted from a
-- pair's predictions when they are stored (store.insert_predictions) and deleted with them
-- (store.delete_predictions): a pair is written whole, so its counts never need the
-- predictions scanned again.
create table if not exists model_class_counts (
    model_id varchar not null,
    dataset varchar not null,
    class_id integer not null,
    n_images bigint not null,
    n_correct bigint not null,
    n_top5 bigint not null
);
