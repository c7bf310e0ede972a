"""The one exception type for a user's mistake.

Anything raised as `PieError` is printed by the CLI as a single `error: ...` line with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""


class PieError(Exception):
    """A user's mistake (bad path, unknown dataset, bad option, corrupt input)."""
