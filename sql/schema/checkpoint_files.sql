-- grain: one row per registered checkpoint
-- keys: model_id
-- Its weights file (`model.pt`) as last verified, so that `pie train` and `pie infer` hash it again
-- only when it changed on disk.
-- A file of the same size and mtime as recorded here, under a sidecar of the same sha256, is the
-- file that was hashed; any other is hashed again and checked against its sidecar and the
-- `models` row (pie.checkpoints.reconcile).
create table if not exists checkpoint_files (
    model_id varchar primary key,
    size bigint not null,       -- bytes of model.pt
    mtime_ns bigint not null,   -- its modification time, nanoseconds since the epoch
    sha256 varchar not null,    -- its sha256 (= the sidecar's and the models row's when recorded)
    checked_at timestamp default current_timestamp
);
