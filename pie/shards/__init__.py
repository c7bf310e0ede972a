"""WebDataset shards, the one way pie writes and reads a packed dataset.

- `format`: names on disk, the key rule (`split_member`) and the URL rule (`locate`);
- `index`: the shard index and the per-shard offsets files (`shards`, `check_present`);
- `write`: reproducible shards with their offsets files and index (`write_shards`, `TarShard`);
- `read`: the sequential reader (`samples`) and the reader of sample ranges (`Reader`).

A url in the index is a path relative to it (what pie writes), an absolute path, a `file:` URL
or a `pipe:` command (`pipe:aws s3 cp s3://bucket/x-000000.tar -`), so an index can be rewritten
to point at shards on an object store.
"""

from pie.shards.format import (
    IMAGE_EXTS,
    INDEX,
    OFFSETS,
    check_key,
    locate,
    offsets_name,
    safe_key,
    shard_name,
    split_member,
)
from pie.shards.index import (
    Shard,
    check_present,
    dataset_hash,
    read_index,
    read_offsets,
    shard_paths,
    shards,
)
from pie.shards.read import (
    Reader,
    Record,
    image_field,
    open_url,
    read_shards,
    samples,
    scan_offsets,
)
from pie.shards.write import (
    SAMPLE_OVERHEAD,
    Packed,
    Sample,
    ShardFile,
    TarShard,
    partial_dir,
    publish,
    sha256_file,
    shard_bounds,
    write_shards,
    write_tar,
)
