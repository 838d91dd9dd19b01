"""The one folder walk of fakelite: every file under a folder is either read or counted by the reason it is not.

Used by dataset discovery (`data/folders.py`: train, eval, robustness, split) and by `detect` (folders of images
and videos). Rules:
- Symbolic links to folders are followed (a dataset's `1_fake` may live elsewhere), with cycle protection: a
  link to the folder it sits in or to one above it is never entered, and a folder (device, inode) is entered
  once per walk; both are counted in `loops`.
- Names are sorted, so the order is deterministic; names that are not valid UTF-8 are kept as Python keeps them
  (surrogate escapes) and opened through Python file objects, never handed to a native decoder as text.
- A file that is not returned is counted under one reason: "unsupported type" (its suffix is not a type the
  installed decoders open), "hidden" (a dot-file, e.g. macOS `._x.jpg`; a hidden folder counts once),
  "unreadable" (a folder that cannot be listed, a broken link without a media suffix) or "too large" (over
  `max_bytes`). Media-named entries that cannot be read (broken links, FIFOs, no permission) are handed on, so
  their reader reports each by name. Decoders add "not an image"/"unreadable"/"too large" for files whose contents fail
  (`fakelite.data.io.reason_category`).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NOT_READ_REASONS = ("unsupported type", "unreadable", "too large", "not an image", "hidden")


@dataclass
class Walk:
    """Files to read (sorted, in walk order) and everything left out, by reason."""

    files: list[Path] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    loops: int = 0  # symlinked folders not entered again (already walked: a cycle or a second link)

    @property
    def not_read(self) -> dict[str, int]:
        """{reason: count} of the files left out (reasons of NOT_READ_REASONS)."""
        return dict(Counter(r for _, r in self.left_out))

    def extend(self, other: Walk) -> None:
        self.files += other.files
        self.left_out += other.left_out
        self.loops += other.loops


def _reason_for(p: Path, st: os.stat_result | None, exts: set[str], max_bytes: int | None) -> str | None:
    if p.suffix.lower() not in exts:
        return "unsupported type"
    if st is None or not stat.S_ISREG(st.st_mode):
        return None  # a FIFO or device named like media: its reader refuses it by name ("not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        return "too large"
    return None


def _points_up(here: Path, link: Path) -> bool:
    """True when the symlinked folder `link` (inside `here`) resolves to `here` or a folder above it."""
    h, t = os.path.realpath(here), os.path.realpath(link)
    return h == t or h.startswith(t.rstrip(os.sep) + os.sep)


def walk_files(roots: Iterable[str | os.PathLike], exts: set[str], max_bytes: int | None = None,
               follow_links: bool = True, _seen: set | None = None) -> Walk:
    """Walk `roots` (folders recursively, files as given) and return the files whose suffix is in `exts`.

    `exts`: lower-case suffixes with the dot (e.g. `fakelite.data.io.IMAGE_EXTS`). `max_bytes`: larger files are
    left out as "too large" (None: no limit). Never raises for a bad entry; a root that does not exist is
    left out as "unreadable".
    """
    out = Walk()
    seen: set[tuple[int, int]] = set() if _seen is None else _seen
    for root in roots:
        p = Path(root)
        try:
            st = p.stat()
        except OSError:
            out.left_out.append((str(p), "unreadable"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk_dir(p, st, exts, max_bytes, follow_links, seen, out)
        else:
            why = _reason_for(p, st, exts, max_bytes)
            if why is None:
                out.files.append(p)
            else:
                out.left_out.append((str(p), why))
    return out


def _walk_dir(d: Path, st: os.stat_result, exts: set[str], max_bytes: int | None, follow_links: bool,
              seen: set, out: Walk) -> None:
    key = (st.st_dev, st.st_ino)
    if key in seen:
        out.loops += 1
        return
    seen.add(key)
    try:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError:
        out.left_out.append((str(d), "unreadable"))
        return
    subdirs = []
    for e in entries:
        p = Path(e.path)
        if e.name.startswith("."):
            out.left_out.append((str(p), "hidden"))
            continue
        try:
            is_link = e.is_symlink()
            est = os.stat(e.path, follow_symlinks=True)
        except OSError:  # a broken link: a media file is handed on, so its reader reports it by name
            if p.suffix.lower() in exts:
                out.files.append(p)
            else:
                out.left_out.append((str(p), "unreadable"))
            continue
        if stat.S_ISDIR(est.st_mode):
            if is_link and not follow_links:
                continue
            if is_link and _points_up(d, p):
                out.loops += 1  # a link to a folder above: a cycle, never entered
                continue
            subdirs.append((p, est))
            continue
        why = _reason_for(p, est, exts, max_bytes)
        if why is None:
            out.files.append(p)
        else:
            out.left_out.append((str(p), why))
    for p, est in subdirs:
        _walk_dir(p, est, exts, max_bytes, follow_links, seen, out)


def iter_dirs(root: str | os.PathLike, follow_links: bool = True):
    """Yield every folder under `root` (root first, sorted, hidden ones skipped), following symlinked folders
    with the same cycle protection as `walk_files`."""
    seen: set[tuple[int, int]] = set()
    stack = [Path(root)]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen or not stat.S_ISDIR(st.st_mode):
            continue
        seen.add(key)
        yield d
        try:
            with os.scandir(d) as it:
                kids = sorted((Path(e.path) for e in it if not e.name.startswith(".")
                               and e.is_dir(follow_symlinks=follow_links)
                               and not (e.is_symlink() and _points_up(d, Path(e.path)))),
                              key=lambda q: os.fsencode(q.name))
        except OSError:
            continue
        stack.extend(reversed(kids))


def format_not_read(counts: dict[str, int]) -> str:
    """"3 unsupported type, 1 too large" (empty string when nothing was left out)."""
    return ", ".join(f"{n} {r}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n)


__all__ = ["NOT_READ_REASONS", "Walk", "walk_files", "iter_dirs", "format_not_read"]
