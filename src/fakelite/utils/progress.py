"""Progress display for every long loop: rich bars, silent with quiet=True (or FAKELITE_QUIET=1).

`progress_bar` is one bar; `ProgressGroup` holds several stage bars in one live display (FaceSynth's build).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def is_quiet(quiet: bool = False) -> bool:
    return quiet or os.environ.get("FAKELITE_QUIET", "") not in ("", "0")


def _noop(n: int = 1, info: str = "", **fields) -> None:
    return None


class ProgressGroup:
    """Several bars in one live display. `task(desc, total)` returns advance(n=1, info="", **fields);
    extra `fields` (e.g. loss=0.3) are shown after the bar, `info` replaces them with a ready-made string."""

    def __init__(self, quiet: bool = False) -> None:
        self._p: Progress | None = None
        if not is_quiet(quiet):
            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                               transient=False)

    def __enter__(self) -> ProgressGroup:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, desc: str, total: int | None) -> Callable[..., None]:
        if self._p is None:
            return _noop
        p = self._p
        tid = p.add_task(desc, total=total, info="")

        def advance(n: int = 1, info: str = "", **fields) -> None:
            if fields:
                info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            p.update(tid, advance=n, **({"info": info} if info else {}))

        return advance


@contextmanager
def progress_bar(desc: str, total: int | None, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """One bar; yields advance(n=1, **fields)."""
    with ProgressGroup(quiet) as group:
        yield group.task(desc, total)
