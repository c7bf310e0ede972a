"""`pie models`: the checkpoints under the work root, read from their sidecars (the database is
not opened). With a model id: that model's settings and per-layer sparsity table."""

from __future__ import annotations

from typer import echo as say

from pie import checkpoints
from pie.errors import PieError
from pie.paths import WorkRoot


def table(header: list[str], rows: list[list[str]]) -> str:
    """Plain text columns, left-aligned text and right-aligned numbers."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = cell.replace(".", "", 1).isdigit()
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def top1(sidecar: checkpoints.Sidecar) -> str:
    """The test top-1 after training; '-' for an imported model (never evaluated by pie train)."""
    return "-" if sidecar.test_top1 is None else f"{sidecar.test_top1:.4f}"


def sidecars(root: WorkRoot) -> list[checkpoints.Sidecar]:
    if not root.checkpoints.is_dir():
        return []
    found = [d for d in sorted(root.checkpoints.iterdir()) if (d / checkpoints.SIDECAR).is_file()]
    return [checkpoints.read_sidecar(d) for d in found]


def main(root: WorkRoot, model_id: str | None) -> None:
    if model_id is None:
        rows = [
            [
                s.model_id,
                s.arch,
                s.method,
                f"{s.target_sparsity:g}",
                f"{s.achieved_sparsity:.4f}",
                str(s.seed),
                top1(s),
                str(s.world_size),
                s.data or "-",
            ]
            for s in sidecars(root)
        ]
        if not rows:
            say(f"no models under {root.checkpoints}")
            return
        header = ["model_id", "arch", "method", "target", "achieved", "seed", "top1"]
        say(table([*header, "world", "data"], rows))
        return
    directory = root.checkpoint(model_id)
    if not (directory / checkpoints.SIDECAR).is_file():
        raise PieError(f"no model {model_id!r} under {root.checkpoints} (see `pie models`)")
    s = checkpoints.read_sidecar(directory)
    say(
        f"{s.model_id}: {s.arch}, {s.method} at {s.target_sparsity:g} (achieved "
        f"{s.achieved_sparsity:.4f}), seed {s.seed}, test top-1 {top1(s)} on "
        f"{s.eval_dataset}, {s.steps} steps on {s.train_dataset} ({s.data or '?'} data, "
        f"{s.world_size} process{'es' if s.world_size > 1 else ''})"
    )
    rows = [[name, f"{value:.4f}"] for name, value in s.layer_sparsity.items()]
    say(table(["layer", "sparsity"], rows))
