"""ingest: image sources -> WebDataset shards + `datasets` / `images` rows; corruptions."""
