"""Experiment configs: one TOML file per experiment, one frozen dataclass per stage.

A file has a top-level `name` (the experiment) and one table per stage:

    name = "fashion-mnist"
    [train]
    sparsities = [0.0, 0.5, 0.9]

Each stage declares its own frozen dataclass (defaults = the documented behaviour) and
loads its table with `load`; CLI flags arrive as `overrides`. Unknown keys, wrong types
and out-of-range values are user mistakes (`PieError`), reported with the key's name.

Which file: the `--config` flag, else $PIE_CONFIG, else `<root>/config.toml` when the work root
has one, else the packaged default `configs/fashion-mnist.toml` (`resolve`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pie.errors import PieError
from pie.paths import check_name, root_path


def packaged(folder: str) -> Path:
    """A folder shipped with pie (`sql`, `configs`): at the top of a checkout (editable installs
    and PYTHONPATH runs included), installed inside the package (pie/<folder>) from a wheel."""
    here = Path(__file__).resolve().parent
    installed = here / folder
    return installed if installed.is_dir() else here.parent / folder


DEFAULT_CONFIG = packaged("configs") / "fashion-mnist.toml"
DEVICES = ("auto", "cpu", "cuda")  # every stage's `device` option
SECTIONS = ("ingest", "corrupt", "train", "compress", "infer", "analyze", "export", "report")
TOP_LEVEL = ("name", "description")

T = TypeVar("T")


def resolve(path: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Path:
    """The config file to use: `path` (the --config flag), else $PIE_CONFIG, else
    `<root>/config.toml` if that file exists (root as `pie.paths.root_path` finds it), else the
    packaged default. Nothing is checked here beyond existence of the work root's file."""
    chosen = path or os.environ.get("PIE_CONFIG")
    if chosen:
        return Path(chosen).expanduser()
    in_root = root_path(root) / "config.toml"
    return in_root if in_root.is_file() else DEFAULT_CONFIG


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise PieError(f"config file {path} is a directory, not a TOML file")
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise PieError(f"config file {path} not found") from None
    except UnicodeDecodeError as e:
        raise PieError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise PieError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise PieError(f"cannot read config file {path}: {e.strerror or e}") from None
    unknown = sorted(set(doc) - set(SECTIONS) - set(TOP_LEVEL))
    if unknown:
        known = ", ".join((*TOP_LEVEL, *SECTIONS))
        raise PieError(f"unknown config key '{unknown[0]}' in {path} (known: {known})")
    return doc


def experiment_name(doc: Mapping[str, Any], path: str | os.PathLike) -> str:
    """The top-level `name`, else the file's stem; it names directories, so `check_name` holds."""
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise PieError(f"config key 'name' in {path} must be a non-empty string")
    return check_name(name, "experiment name")


def load(
    cls: type[T], path: str | os.PathLike, section: str, overrides: Mapping[str, Any] | None = None
) -> T:
    """Build `cls` from table `section` of the TOML file, then apply non-None `overrides`.

    The experiment name is checked whatever the section; a field named `experiment` is filled
    from it.
    """
    doc = read_toml(path)
    experiment = experiment_name(doc, path)
    raw = doc.get(section, {})
    if not isinstance(raw, dict):
        raise PieError(f"config key '{section}' in {path} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} - {"experiment"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise PieError(
            f"unknown config key '{section}.{unknown[0]}' in {path} "
            f"(known: {', '.join(sorted(fields))})"
        )
    values = {k: coerce(v, hints[k], f"{section}.{k}") for k, v in raw.items()}
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = coerce(v, hints[k], f"--{k.replace('_', '-')}")
    if "experiment" in hints:
        values["experiment"] = experiment
    try:
        return cls(**values)
    except ValueError as e:  # the message names the key; the value came from file or flag
        raise PieError(str(e)) from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type hint; lists become tuples, ints become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise PieError(f"config key '{where}' must be a list, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise PieError(f"config key '{where}' must be an integer, got {value!r}")
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise PieError(f"config key '{where}' must be {hint.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def differences(
    stored: Mapping[str, Any], asked: Mapping[str, Any], ignore: Collection[str] = ()
) -> tuple[str, str] | None:
    """How settings recorded as JSON (`stored`) differ from those a run asks (`asked`, compared
    as JSON stores them: tuples become lists), besides the keys `ignore`: the keys that differ
    with their values on each side, `("k=v, ...", "k=v, ...")`, or None when none does. A key
    one side lacks counts as null there (an option added since, at a null default, changes
    nothing) and shows as `(unset)`."""
    asked = json.loads(json.dumps(asked))
    keys = sorted((stored.keys() | asked.keys()) - set(ignore))
    differ = [k for k in keys if stored.get(k) != asked.get(k)]

    def spell(values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={values.get(k, '(unset)')}" for k in differ)

    return (spell(stored), spell(asked)) if differ else None
