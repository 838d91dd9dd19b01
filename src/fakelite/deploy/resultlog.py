"""JSON Lines result log of `fakelite detect`: each result is appended (and flushed) as soon as it is known, so a
killed run loses nothing it finished; a resumed run takes the results already there.

One JSON object per line, the same dict as in the final JSON's `results`. Paths that are not valid UTF-8 are kept
as Python keeps them (surrogate escapes, written as `\\udcXX` by `json.dumps`), so they round-trip exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete result lines of a detect JSON Lines file (a line cut short by a kill is dropped)."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("path"), str):
            out.append(r)
    return out


class ResultLog:
    """Append-only result log. `done` maps path → result for the results kept from an earlier run (`resume`)."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        if resume:
            self.done = {r["path"]: r for r in read_jsonl(self.path)}
        # rewrite only complete lines, so appending after a line cut short by a kill stays valid JSON Lines
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.done.values()))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, result: dict[str, Any]) -> None:
        """Append one result and flush it to the OS (a SIGKILL afterwards does not lose it)."""
        if result["path"] in self.done:
            return
        self._f.write(json.dumps(result) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
