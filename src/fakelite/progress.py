"""One progress helper for every long loop: a rich bar, silent with quiet=True (or FAKELITE_QUIET=1)."""

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


@contextmanager
def progress_bar(desc: str, total: int | None, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """Yields advance(n=1, **fields); `fields` (e.g. loss=0.3) are shown after the bar."""
    if is_quiet(quiet):
        yield lambda n=1, **kw: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False) as p:
        task = p.add_task(desc, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            p.update(task, advance=n, **({"info": info} if fields else {}))

        yield advance
