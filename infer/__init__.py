"""infer: every checkpoint over every evaluation dataset, every prediction into DuckDB."""
