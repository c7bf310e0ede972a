"""The annotations the report shows (`pie annotate`): the rows of view pie_annotations most
worth reading, and each gallery image's annotations, by which the gallery can be filtered."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import duckdb

TOP_ANNOTATIONS = 20  # rows of pie_annotations in the table: the significant ones first, then p


def tests(con: duckdb.DuckDBPyConnection, dataset: str, experiment: str) -> list[dict[str, Any]]:
    """The most significant rows of pie_annotations for the study, at most TOP_ANNOTATIONS."""
    result = con.execute(
        "select * from pie_annotations where dataset = ? and experiment = ?"
        " order by significant desc, p_value, method, level, source, name, value limit ?",
        [dataset, experiment, TOP_ANNOTATIONS],
    )
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def labels(
    con: duckdb.DuckDBPyConnection, dataset: str, keys: Sequence[str]
) -> dict[str, list[str]]:
    """key -> its annotations as `source: name = value`, for those of `keys` that have any."""
    found: dict[str, list[str]] = defaultdict(list)
    for key, label in con.execute(
        "select key, source || ': ' || name || ' = ' || value from annotations"
        " where dataset = ? and key in (select unnest(?)) order by key, source, name",
        [dataset, list(keys)],
    ).fetchall():
        found[key].append(label)
    return dict(found)


def gallery_fields(keys: Sequence[str], by_key: dict[str, list[str]]) -> dict[str, Any]:
    """The gallery blob's annotation fields: every label once (`annotations`), and per gallery
    key (in the order of `keys`) the indices of its labels (`keyAnnotations`)."""
    names = sorted({label for found in by_key.values() for label in found})
    index = {label: i for i, label in enumerate(names)}
    return {
        "annotations": names,
        "keyAnnotations": [[index[label] for label in by_key.get(k, [])] for k in keys],
    }
