"""Keep a third-party converter's chatter off the terminal while keeping what the user must know.

Converters such as litert-torch (torch.export → StableHLO → TFLite) print through four channels: Python warnings
(torch.export, jax, torchao deprecations), Python loggers (absl, jax, tensorflow), a progress tree on stdout, and
native C++ logs written straight to file descriptor 2 (absl/glog "W0000 …" lines, TensorFlow's start-up notes).
`third_party_quiet()` mutes all four for the duration of the block, except:

- warnings raised from fakelite's own modules (they are ours: recorded, and issued again after the block);
- captured native stderr lines that report an error or a fatal condition (re-printed after the block);
- everything captured, when the block raises: the last lines are re-printed so a failure can be diagnosed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

THIRD_PARTY_LOGGERS = ("absl", "jax", "jaxlib", "tensorflow", "torch._export", "torch.export", "torchao",
                       "litert_torch", "ai_edge_quantizer", "ml_dtypes", "transformers")
KEEP = re.compile(r"\b(error|fatal|failed|cannot)\b", re.IGNORECASE)
NATIVE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2"}


@contextlib.contextmanager
def _fd2_captured() -> Iterator[Any]:
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2 (a detached process): nothing to capture
            tmp.captured = ""  # type: ignore[attr-defined]
            yield tmp
            return
        try:
            os.dup2(tmp.fileno(), 2)
            yield tmp
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            tmp.captured = tmp.read().decode(errors="replace")  # type: ignore[attr-defined]


@contextlib.contextmanager
def third_party_quiet(tail_on_error: int = 20) -> Iterator[None]:
    """Mute third-party warnings, loggers, stdout and native stderr inside the block (see module docstring)."""
    for k, v in NATIVE_ENV.items():
        os.environ.setdefault(k, v)
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    failed = False
    ours: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", module=r"fakelite(\.|$)")
            try:
                with _fd2_captured() as cap, contextlib.redirect_stdout(io.StringIO()):
                    yield
            except BaseException:
                failed = True
                raise
            finally:
                text = getattr(cap, "captured", "")
                lines = [ln for ln in text.splitlines() if ln.strip()]
                keep = lines[-tail_on_error:] if failed else [ln for ln in lines if KEEP.search(ln)]
                for ln in keep:
                    print(ln, file=sys.stderr)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for w in ours:  # ours, issued again now that stderr is the terminal again
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
