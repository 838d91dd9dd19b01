"""The one video reader of fakelite (detect, stream, serve, tests), built on PyAV (FFmpeg's libraries).

It never trusts the container's frame count or duration: an AVI header may claim 100,000 frames for a file that
holds 20, and a truncated MP4 keeps the duration of the whole clip. Instead:

1. **Count** (`probe_video`): demux the video stream's packets without decoding them and count those that carry a
   presented frame (size > 0, not flagged discard by an edit list). The packet index gives the real number of
   frames and their timestamps; demuxing costs a fraction of decoding (`docs/robustness.md`, "Media input", has
   the measurement), and the count can be bounded (`max_frames`, `max_seconds`) so a service never walks a huge
   file to learn that it is too long.
2. **Sample** N indices evenly over what the file really holds (or every k-th frame), `sample_indices`.
3. **Decode** (`read_video`) every packet in order (inter-coded frames need their references), reading on past
   packets the decoder rejects; a frame's index is the rank of its timestamp among the counted packets. A wanted
   frame that does not decode is replaced by the next one that does (before the next wanted index), or, at the
   end of the file, by the last one that did.
4. **Report** per video (`VideoInfo`): frames in the file, requested, decoded, unreadable, the real duration, the
   header's claims, the rotation applied, and whether the file is shorter than its header says.

Rotation metadata (the display matrix phones write) is honoured: frames come out as a viewer shows them.
Files are opened through a Python file object, so a file name that is not valid UTF-8 never reaches FFmpeg as text.
All failures raise `BadInput` with one line naming the file. For untrusted files run this in the isolated worker
(`fakelite.data.isolated`), which survives a crash or hang of the native decoder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakelite.data.io import MAX_PIXELS, BadInput

MAX_VIDEO_BYTES = 8 * 1024**3  # refused before opening ("too large")


@dataclass
class VideoInfo:
    """What a video really holds (counted from its packets), what its header claims, and what was read."""

    frames: int  # frames in the file, counted from the packet index (the real count; 0 until probed)
    fps: float  # the stream's average rate (header), else frames / real duration, else 25
    width: int  # displayed width in pixels (after rotation)
    height: int
    duration_s: float | None = None  # real duration from the packet timestamps (frames / fps when they lack them)
    header_frames: int | None = None  # the container's claim (None: not stated)
    header_duration_s: float | None = None
    rotation: int = 0  # degrees counter-clockwise applied to show the frame upright (display matrix)
    codec: str = ""
    truncated: bool = False  # the header claims more than the file holds, or demuxing stopped at broken data
    capped: bool = False  # counting stopped at the max_frames/max_seconds bound: the file is at least that long
    frames_requested: int = 0
    frames_decoded: int = 0  # sampled frames delivered
    frames_unreadable: int = 0  # frames of the file the decoder rejected (over the whole decode pass)
    frames_substituted: int = 0  # wanted frames that did not decode, replaced by the next decodable one
    frames_missed: int = 0  # wanted frames with no decodable replacement
    indices: list[int] = field(default_factory=list)  # frame indices delivered
    times: list[float] = field(default_factory=list)  # their timestamps in s from the first frame

    def report(self) -> dict[str, Any]:
        """The JSON-ready dict of this info."""
        return asdict(self)


def _fileobj(path: str | os.PathLike):
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise BadInput(p, "no such file") from None
    except PermissionError:
        raise BadInput(p, "permission denied") from None
    except OSError as e:
        raise BadInput(p, f"cannot read ({e.strerror})") from None
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise BadInput(p, "not a regular file")
    if st.st_size == 0:
        raise BadInput(p, "empty file (0 bytes)")
    if st.st_size > MAX_VIDEO_BYTES:
        raise BadInput(p, f"file too large ({st.st_size:,} bytes; limit {MAX_VIDEO_BYTES:,})")
    try:
        return open(p, "rb")  # noqa: SIM115 - closed by the caller with the container
    except PermissionError:
        raise BadInput(p, "permission denied") from None
    except OSError as e:
        raise BadInput(p, f"cannot read ({e.strerror})") from None


def _open(path: str | os.PathLike):
    """(container, video stream, file object) or BadInput."""
    import av

    av.logging.set_level(av.logging.PANIC)  # corrupt files make FFmpeg chatty; every failure is reported anyway
    f = _fileobj(path)
    try:
        c = av.open(f, "r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError, UnicodeError) as e:
        f.close()
        msg = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise BadInput(path, f"not a readable video (FFmpeg cannot open it: {msg})") from None
    if not c.streams.video:
        c.close()
        f.close()
        raise BadInput(path, "not a readable video (no video stream)")
    # the first real video stream: cover art (an attached picture) is a video stream of one frame
    real = [v for v in c.streams.video if not (int(v.disposition) & int(av.stream.Disposition.attached_pic))]
    vs = (real or list(c.streams.video))[0]
    return c, vs, f


def _ffmsg(e: Exception) -> str:
    return (str(e).splitlines()[0][:100] if str(e) else type(e).__name__)


def _header(vs, c) -> tuple[int | None, float | None]:
    n = int(vs.frames or 0) or None
    dur = None
    if vs.duration and vs.time_base:
        dur = float(vs.duration * vs.time_base)
    elif c.duration:
        dur = float(c.duration) / 1e6
    return n, (round(dur, 4) if dur is not None and math.isfinite(dur) and dur > 0 else None)


def _rate(vs) -> float | None:
    for r in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        try:
            v = float(r) if r else 0.0
        except (TypeError, ZeroDivisionError):
            v = 0.0
        if math.isfinite(v) and 0 < v <= 1000:
            return v
    return None


def _count(path, c, vs, max_frames: int | None, max_seconds: float | None) -> tuple[list[int | None], dict]:
    """Demux the video packets: the presented frames' timestamps (None where a packet has none)."""
    import av

    pts: list[int | None] = []
    last_end: int | None = None
    meta = {"truncated": False, "capped": False, "discarded": 0}
    tb = float(vs.time_base) if vs.time_base else None
    first: int | None = None
    try:
        for pk in c.demux(vs):
            if pk.size == 0:
                continue
            if pk.is_discard:  # trimmed by an edit list: stored, never shown
                meta["discarded"] += 1
                continue
            t = pk.pts if pk.pts is not None else pk.dts
            pts.append(t)
            if t is not None:
                first = t if first is None else min(first, t)
                end = t + (pk.duration or 0)
                last_end = end if last_end is None else max(last_end, end)
            if max_frames is not None and len(pts) > max_frames:
                meta["capped"] = True
                break
            if (max_seconds is not None and tb and first is not None and last_end is not None
                    and (last_end - first) * tb > max_seconds):
                meta["capped"] = True
                break
    except (av.error.FFmpegError, OSError, ValueError, MemoryError):
        meta["truncated"] = True  # demuxing stopped at broken data: what came before is what the file holds
    meta["span"] = (last_end - first) * tb if tb and first is not None and last_end is not None else None
    meta["first"] = first
    return pts, meta


def probe_video(path: str | os.PathLike, max_frames: int | None = None,
                max_seconds: float | None = None) -> VideoInfo:
    """Count the frames a video really holds from its packet index (no decoding).

    `max_frames`/`max_seconds` bound the work: counting stops just past the bound and `capped` is set (the file
    is at least that long). Raises BadInput (one line naming the file) when the file cannot be opened or holds no
    video frame.
    """
    c, vs, f = _open(path)
    try:
        info, _ = _probe(path, c, vs, max_frames, max_seconds)
        return info
    finally:
        c.close()
        f.close()


def _probe(path, c, vs, max_frames, max_seconds) -> tuple[VideoInfo, dict]:
    hn, hd = _header(vs, c)
    w, h = int(vs.codec_context.width or 0), int(vs.codec_context.height or 0)
    if w * h > MAX_PIXELS:  # refused before a frame is decoded
        raise BadInput(path, f"video frames too large ({w}×{h} pixels; limit {MAX_PIXELS:,})")
    pts, meta = _count(path, c, vs, max_frames, max_seconds)
    n = len(pts)
    if n == 0:
        raise BadInput(path, "corrupt or truncated video (no video frame in the file)")
    rate = _rate(vs)
    span = meta["span"]
    if span is not None and span > 0 and n > 1 and rate is None:
        rate = n / span
    fps = rate or 25.0
    duration = span if span is not None and span > 0 else n / fps
    info = VideoInfo(frames=n, fps=round(fps, 4), width=w, height=h, duration_s=round(duration, 4),
                     header_frames=hn, header_duration_s=hd, codec=str(vs.codec_context.name or ""),
                     truncated=bool(meta["truncated"] or (hn is not None and hn > n + meta["discarded"]
                                                                  and not meta["capped"])),
                     capped=bool(meta["capped"]))
    meta["pts"] = pts
    return info, meta


def sample_indices(n_frames: int, frames: int | None = 32, every: int | None = None) -> list[int]:
    """Indices to decode: every k-th frame (if `every`), else `frames` evenly spaced over [0, n-1] (all if fewer)."""
    if n_frames <= 0:
        return []
    if every:
        return list(range(0, n_frames, max(1, int(every))))
    k = max(1, int(frames or 32))
    if n_frames <= k:
        return list(range(n_frames))
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, k)})


def _upright(frame) -> tuple[np.ndarray, int]:
    a = frame.to_ndarray(format="rgb24")
    try:
        rot = int(round(float(frame.rotation or 0) / 90.0)) * 90
    except (TypeError, ValueError, AttributeError):
        rot = 0
    if rot % 360:
        a = np.ascontiguousarray(np.rot90(a, k=(rot // 90) % 4))
    return a, rot % 360


def read_video(path: str | os.PathLike, frames: int | None = 32, every: int | None = None,
               info_out: list | None = None, max_frames: int | None = None,
               max_seconds: float | None = None, all_frames: bool = False) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time in s, (H, W, 3) uint8 RGB upright frame) for frames sampled over what the file holds.

    `frames`: how many, evenly spaced; `every`: every k-th frame instead; `all_frames`: every frame (stream).
    `info_out`: a list that receives the `VideoInfo` at once (counts filled in as reading goes; final when the
    generator ends). `max_frames`/`max_seconds` bound the count (longer files are read up to the bound).
    Raises BadInput (one line naming the file) when nothing decodes.
    """
    import av

    c, vs, f = _open(path)
    try:
        info, meta = _probe(path, c, vs, max_frames, max_seconds)
        if info_out is not None:
            info_out.append(info)
        n = info.frames
        want = list(range(n)) if all_frames else sample_indices(n, frames, every)
        info.frames_requested = len(want)
        known = sorted({t for t in meta["pts"] if t is not None})
        rank = {t: i for i, t in enumerate(known)}
        t0 = meta["first"] if meta["first"] is not None else 0
        tb = float(vs.time_base) if vs.time_base else None
    except BaseException:
        c.close()
        f.close()
        raise
    c.close()
    f.close()

    def deliver(idx: int, fr) -> tuple[int, float, np.ndarray]:
        rgb, rot = _upright(fr)
        info.rotation = rot
        if rot in (90, 270):
            info.width, info.height = rgb.shape[1], rgb.shape[0]
        t = (fr.pts - t0) * tb if fr.pts is not None and tb else idx / info.fps
        info.frames_decoded += 1
        info.indices.append(idx)
        info.times.append(round(float(t), 4))
        return idx, float(t), rgb

    c, vs, f = _open(path)
    decoded = 0
    errors = 0
    k = 0
    last = -1
    spare = None  # the latest decoded frame after the last delivered one (stands in for wanted frames at the end)
    try:
        # SLICE, not AUTO: with frame threads, a consumer that stops before the end (closing this generator)
        # can hang in container.close() with torch imported (PyAV issues #1849, #1861; seen here in the suite).
        vs.thread_type = "SLICE"

        def frames_of(packets):
            nonlocal errors
            for pk in packets:
                try:
                    yield from pk.decode()
                except (av.error.FFmpegError, ValueError, MemoryError):
                    errors += 1

        def packets():
            nonlocal errors
            try:
                yield from c.demux(vs)
            except (av.error.FFmpegError, OSError, ValueError, MemoryError):
                errors += 0  # demuxing stopped at broken data; the count already ended there too
                return

        for fr in frames_of(packets()):
            idx = rank.get(fr.pts) if fr.pts is not None else None
            if idx is None or idx <= last:
                idx = last + 1
            if idx >= n:
                continue  # past the counted (bounded) frames
            last = idx
            decoded += 1
            if k >= len(want):
                continue  # keep decoding to count unreadable frames
            if want[k] > idx:
                spare = (idx, fr)
                continue
            while k + 1 < len(want) and want[k + 1] <= idx:  # wanted frames that did not decode, passed by
                info.frames_missed += 1
                k += 1
            if want[k] < idx:
                info.frames_substituted += 1  # the wanted frame did not decode: the next one stands for it
            k += 1
            spare = None
            yield deliver(idx, fr)
        if k < len(want) and spare is not None:  # the last wanted frame(s) did not decode: the last that did
            info.frames_substituted += 1
            k += 1
            yield deliver(*spare)
        info.frames_missed += len(want) - k
        info.frames_unreadable = max(0, n - decoded) if not info.capped else errors
        if info.frames_decoded == 0:
            if info.frames_unreadable or errors:
                raise BadInput(path, f"corrupt video (none of its {n} frame(s) could be decoded)")
            raise BadInput(path, "corrupt or truncated video (no frame could be decoded)")
    finally:
        c.close()
        f.close()


def iter_frames(path: str | os.PathLike, frames: int | None = 32, every: int | None = None,
                info_out: list | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """`read_video` with the signature of the former OpenCV reader (kept for callers and scripts)."""
    return read_video(path, frames, every, info_out=info_out)
