"""pie: what pruning does to an image classifier beyond its headline accuracy.

The spine shared by the stages: the work root, configs, the DuckDB store, shard IO,
the model registry and checkpoint IO. Stages (ingest, train, infer, analytics) talk to
each other only through the work root and import nothing from each other.
"""

__version__ = "0.1.0"
