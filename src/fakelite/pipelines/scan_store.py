"""The result store of `fakelite scan`: a folder of immutable Parquet part files, committed exactly once.

Layout of RESULTS/ (any Parquet reader takes the folder: pyarrow, DuckDB `read_parquet('RESULTS/*.parquet')`,
pandas, Spark, Ray Data; files starting with "_" or "." are ignored by those readers):

    _scan.json                          manifest: model id + SHA-256, detection options, schema version
    _scan.lock                          flock held by the one writer (a second concurrent scan is refused)
    part-<run>-<seq>.parquet            committed rows (SCHEMA), never modified after the rename
    .tmp-<run>-<seq>.parquet            a part being written; deleted on the next start

Exactly once (keyed by content hash): one process — the scan's driver — is the only writer. It keeps the set of
content hashes already committed or buffered, drops any second result for the same content, and commits a buffer
by writing a temporary file, fsync-ing it and renaming it into place (`os.replace` is atomic on POSIX). A
`kill -9` therefore loses at most the uncommitted buffer, never half a part: the next run reads the committed
parts, skips what they hold and scores the rest. Why Parquet and not SQLite: see docs/scale.md.

Errors: `ScanStoreError` (a ValueError) with one line naming the folder.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "_scan.json"
LOCK = "_scan.lock"
FORMAT = "fakelite-scan/1"

# (name, pyarrow type name, nullable) — kept as plain data so that importing this module does not import pyarrow
COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "string"),            # absolute path of the file scored
    ("sha256", "string"),          # content hash (hex) — the key; null only when the file could not be read
    ("size_bytes", "int64"),
    ("mtime_ns", "int64"),
    ("kind", "string"),            # image | video
    ("score", "float64"),          # probability of fake; null with a note (no face) or an error
    ("label", "string"),           # real | fake | null
    ("threshold", "float64"),
    ("model_id", "string"),
    ("model_sha256", "string"),    # SHA-256 of the model file
    ("input", "string"),           # images: "faces" or "whole image"
    ("faces", "int32"),            # faces scored (video: summed over sampled frames)
    ("frames_sampled", "int32"),   # videos only
    ("frames_with_face", "int32"), # videos only
    ("note", "string"),
    ("error", "string"),           # one line naming the file and the problem, or null
    ("seconds", "float64"),        # wall time of hashing + decoding + scoring this file, in the worker
    ("worker", "string"),          # host:pid that scored it
    ("scanned_at", "timestamp[us, tz=UTC]"),
    ("detail", "string"),          # the full `fakelite detect` result as JSON (face boxes, per-frame scores)
)
# columns that legitimately differ between two runs over the same files
VOLATILE = ("seconds", "worker", "scanned_at")


class ScanStoreError(ValueError):
    """A results folder that cannot be used (wrong model/options, not a scan folder, unreadable part)."""


def arrow_schema():
    """The pyarrow schema of a part file."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(),
             "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC")}
    return pa.schema([pa.field(n, types[t]) for n, t in COLUMNS])


def rows_to_table(rows: list[dict[str, Any]]):
    """A pyarrow Table with SCHEMA's columns from row dicts (missing keys become null)."""
    import pyarrow as pa

    schema = arrow_schema()
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in schema.names}, schema=schema)


def row_key(row: dict[str, Any]) -> str:
    """The exactly-once key: the content hash, or the path for a file that could not be read at all."""
    return row["sha256"] if row.get("sha256") else "unreadable:" + str(row["path"])


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def part_files(root: str | os.PathLike) -> list[Path]:
    """Committed part files of a results folder, sorted."""
    return sorted(Path(root).glob("part-*.parquet"))


def read_results(root: str | os.PathLike, columns: list[str] | None = None):
    """All committed rows of a results folder as one pyarrow Table (empty table when there is none); `columns`
    reads only those (Parquet is columnar: the resume check never reads the `detail` JSON).

    Raises ScanStoreError naming the part file when one cannot be read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in part_files(root):
        try:
            tables.append(pq.read_table(f, schema=arrow_schema(), columns=columns))
        except (OSError, pa.ArrowException) as e:
            raise ScanStoreError(f"{f}: unreadable result part ({str(e).splitlines()[0]})") from None
    if not tables:
        empty = arrow_schema().empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(tables)


class ScanStore:
    """The single writer of one results folder.

    `ScanStore(root, manifest)` creates the folder (or checks that an existing one was made with the same model
    and options), removes temporaries a killed run left behind and loads what is committed. `add(row)` buffers a
    row unless its key is already known (returns False then); `commit()` writes the buffer as one part file.
    """

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any], commit_rows: int = 256,
                 commit_seconds: float = 10.0):
        self.root = Path(root)
        self.commit_rows = max(1, int(commit_rows))
        self.commit_seconds = float(commit_seconds)
        if self.root.exists() and not self.root.is_dir():
            raise ScanStoreError(f"{self.root}: --out must be a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        self._buf: list[dict[str, Any]] = []
        try:
            self._open(manifest)
        except BaseException:
            self._lock.close()
            self._lock = None
            raise

    def _open(self, manifest: dict[str, Any]) -> None:
        self._check_manifest(manifest)
        for tmp in self.root.glob(".tmp-*.parquet"):  # a part whose commit a kill interrupted
            tmp.unlink(missing_ok=True)
        table = read_results(self.root, columns=["path", "sha256", "size_bytes", "mtime_ns"])
        cols = table.to_pydict()
        self.keys: set[str] = set()
        self.paths: dict[str, tuple[int | None, int | None]] = {}
        for p, h, s, m in zip(cols["path"], cols["sha256"], cols["size_bytes"], cols["mtime_ns"], strict=True):
            self.keys.add(row_key({"path": p, "sha256": h}))
            self.paths[p] = (s, m)
        self.committed_before = table.num_rows
        self.committed = 0
        self.parts_written = 0
        self._last_commit = time.monotonic()
        self._run = f"{time.time_ns():x}-{uuid.uuid4().hex[:6]}"

    def _acquire_lock(self):
        """An exclusive flock on RESULTS/_scan.lock for the writer's life: a second scan writing to the same
        folder at the same time would break exactly-once, so it is refused. The kernel drops the lock when the
        process dies, kill -9 included."""
        import fcntl

        fh = open(self.root / LOCK, "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ScanStoreError(f"{self.root}: another scan is writing to this folder now; wait for it or use "
                                 "another --out") from None
        return fh

    def close(self) -> None:
        """Commit what is buffered and release the folder."""
        try:
            self.commit()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        want = {"format": FORMAT, **manifest}
        f = self.root / MANIFEST
        if f.exists():
            try:
                have = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                raise ScanStoreError(f"{f}: unreadable scan manifest ({e})") from None
            for k in ("format", "model_sha256", "options"):
                if have.get(k) != want.get(k):
                    raise ScanStoreError(
                        f"{self.root}: holds results of a different scan ({k}: {have.get(k)!r} there, "
                        f"{want.get(k)!r} now); use another --out")
            return
        if part_files(self.root) or any(self.root.glob("*.parquet")):
            raise ScanStoreError(f"{self.root}: holds Parquet files but no {MANIFEST}; not a fakelite scan folder")
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(want, indent=1, sort_keys=True))
        os.replace(tmp, f)
        _fsync_dir(self.root)

    def is_done(self, path: str, size: int | None, mtime_ns: int | None) -> bool:
        """True when this path, unchanged (same size and mtime), already has a committed row."""
        return self.paths.get(path) == (size, mtime_ns)

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer one result row; False (and nothing stored) when its content was stored already."""
        key = row_key(row)
        if key in self.keys:
            return False
        self.keys.add(key)
        self._buf.append(row)
        if len(self._buf) >= self.commit_rows or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()
        return True

    def add_many(self, rows: Iterable[dict[str, Any]]) -> int:
        return sum(self.add(r) for r in rows)

    def commit(self) -> Path | None:
        """Write the buffered rows as one part (temp file → fsync → atomic rename). None when nothing buffered."""
        import pyarrow.parquet as pq

        self._last_commit = time.monotonic()
        if not self._buf:
            return None
        name = f"{self._run}-{self.parts_written:06d}.parquet"
        tmp, final = self.root / f".tmp-{name}", self.root / f"part-{name}"
        pq.write_table(rows_to_table(self._buf), tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        for r in self._buf:
            self.paths[r["path"]] = (r.get("size_bytes"), r.get("mtime_ns"))
        self.committed += len(self._buf)
        self.parts_written += 1
        self._buf = []
        return final
