"""Stop a long-running loop cleanly on SIGINT/SIGTERM (Ctrl-C, `kill`, a container stop).

    with stop_on_signals() as stop:
        while not stop.is_set():
            ...            # the loop ends at its next check; the caller then writes its summary and log
    stop.signal_name       # "SIGINT" / "SIGTERM" / None

The first signal only sets the flag; the previous handlers are put back at once, so a second Ctrl-C interrupts
as usual (KeyboardInterrupt) if the loop is stuck. Handlers can only be installed from the main thread; elsewhere
the flag is never set by a signal (the caller's thread cannot receive one anyway).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = ("SIGINT", "SIGTERM")


class StopFlag:
    """Set once a stop signal arrived; `signal_name` says which."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, name: str | None = None) -> None:
        self.signal_name = self.signal_name or name
        self._event.set()


@contextlib.contextmanager
def stop_on_signals(names: tuple[str, ...] = SIGNALS) -> Iterator[StopFlag]:
    """Install flag-setting handlers for `names` within the block; restore the previous ones after it."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {s: signal.getsignal(s) for s in sigs}

    def restore() -> None:
        for s, h in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, h if h is not None else signal.SIG_DFL)

    def handler(signum: int, _frame: object) -> None:
        flag.set(signal.Signals(signum).name)
        restore()  # a second signal acts as it did before (Ctrl-C twice: KeyboardInterrupt)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        restore()
