"""Load test of `fakelite serve` on loopback: a real uvicorn process, N requests at concurrency C.

Sends a mix of valid images (PNG, JPEG) and known-bad inputs (text named .jpg → 415, truncated JPEG → 422) and
checks every answer: the expected status, or 503 with Retry-After and error code "busy" when the server is
saturated. Anything else (5xx, wrong status, connection error) is an unexpected error. The server's RSS is
sampled from /proc during the run. Results go to a Markdown file (and optionally JSON).

Bounded: at most --requests requests and --max-seconds of wall time; loopback only.

Example:
    .venv/bin/python benchmarks/load_test.py --model runs/demo/fp/model.fakelite --requests 600 --concurrency 16 \
        --out docs/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def host_line() -> str:
    """CPU model, the SIMD flags that matter for inference, cores, Python and the kernel's autogroup setting."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name") and model in ("", platform.machine()):
                model = ln.split(":", 1)[1].strip()
            elif ln.startswith("flags"):
                flags = set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile") if f in flags]
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = False
    return (f"{model} ({', '.join(simd) or 'no AVX2'}), {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, scheduler autogroup {'on' if autogroup else 'off'}; shared with other "
            "work (load average in the table)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_one(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct child processes (uvicorn's workers under `--workers N`; the decode processes a worker's detection
    threads started), from /proc: the children of every thread of the process."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for t in tasks:
        try:
            out += [int(x) for x in (t / "children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """The process and all its descendants: uvicorn's workers and their isolated decode processes."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of the server process and all its descendants (uvicorn workers, their
    decode processes), from /proc/PID/stat (a process that ended meanwhile is no longer counted)."""
    total = 0.0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float | None:
    """RSS of the server: the process plus its worker processes (MB)."""
    own = _rss_one(pid)
    if own is None:
        return None
    return own + sum(v for c in children(pid) if (v := _rss_one(c)) is not None)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            v = rss_mb(self.pid)
            if v is not None:
                self.samples.append((time.perf_counter(), v))
            self.stop.wait(self.every)


def payloads(size: int, seed: int = 0) -> list[tuple[str, bytes, int]]:
    """(name, bytes, expected status) — 80 % PNG, 10 % JPEG, 5 % text-as-JPEG (415), 5 % truncated JPEG (422)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes, int]] = []
    for i in range(8):
        img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        png, jpg = io.BytesIO(), io.BytesIO()
        img.save(png, "PNG")
        img.save(jpg, "JPEG", quality=90)
        out += [(f"img{i}.png", png.getvalue(), 200)] * 8 + [(f"img{i}.jpg", jpg.getvalue(), 200)]
        if i < 4:
            out.append((f"text{i}.jpg", b"plain text, not an image\n" * 8, 415))
            out.append((f"trunc{i}.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 3], 422))
    return out


def multipart_request(host: str, name: str, data: bytes, api_key: str | None) -> bytes:
    """The whole HTTP/1.1 request (headers + multipart body) for POST /v1/detect, encoded once and reused."""
    boundary = "fakeliteloadtest7d0c"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}"
            f"\r\nContent-Length: {len(body)}\r\n" + (f"X-API-Key: {api_key}\r\n" if api_key else "") + "\r\n")
    return head.encode() + body


class RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: sends a pre-encoded request, reads the status line,
    the headers and a Content-Length body (what uvicorn answers). Reconnects when the server closed it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: reconnect once
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(raw)
                await self.writer.drain()
                line = await self.reader.readline()
                if not line:
                    raise ConnectionResetError("connection closed before the answer")
                head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if fresh or attempt:
                    raise
        status = int(line.split(b" ", 2)[1])
        headers = {}
        for h in head.decode("latin-1").split("\r\n"):
            if ":" in h:
                k, v = h.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body


async def run_load(url: str, n: int, concurrency: int, max_seconds: float, size: int, api_key: str | None) -> dict:
    """n requests from `concurrency` keep-alive connections, each sending its next request when the previous
    answer is in. Request bytes are built once per payload before the clock starts, so the client's work per
    request is a socket write, a header parse and (for error answers) a small JSON parse."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    items = payloads(size)
    raw = {name: multipart_request(f"{host}:{port}", name, data, api_key) for name, data, _ in items}
    rnd = random.Random(0)
    plan = [rnd.choice(items) for _ in range(n)]
    rows: list[dict] = []
    deadline = time.perf_counter() + max_seconds
    todo = iter(enumerate(plan))

    async def client() -> None:
        conn = RawConnection(host, int(port))
        try:
            for i, (name, _, expect) in todo:
                if time.perf_counter() > deadline:
                    rows.append({"i": i, "skipped": True})
                    continue
                t0 = time.perf_counter()
                try:
                    status, headers, body = await conn.request(raw[name])
                    dt = time.perf_counter() - t0
                    ok = status == expect and (status != 200 or b'"score":' in body)
                    busy_ok = False
                    if status == 503:
                        err = json.loads(body).get("error", {}) if body else {}
                        busy_ok = headers.get("retry-after", "").isdigit() and err.get("code") == "busy"
                    rows.append({"i": i, "status": status, "expect": expect, "s": dt, "ok": ok,
                                 "busy_ok": busy_ok, "bad_503": status == 503 and not busy_ok})
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                    await conn.close()
                    rows.append({"i": i, "status": None, "expect": expect, "s": time.perf_counter() - t0,
                                 "ok": False, "busy_ok": False, "exc": type(e).__name__})
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    done = [r for r in rows if not r.get("skipped")]
    unexpected = [r for r in done if not r["ok"] and not r["busy_ok"]]
    ok200 = [r["s"] for r in done if r["status"] == 200 and r["ok"]]
    all_lat = [r["s"] for r in done if r["status"] is not None]

    def pct(v: list[float], q: float) -> float | None:
        return round(1000 * float(np.percentile(v, q)), 1) if v else None

    by_status: dict[str, int] = {}
    for r in done:
        by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
    return {
        "requests": len(done), "skipped_by_time_limit": len(rows) - len(done), "concurrency": concurrency,
        "wall_s": round(wall, 2), "by_status": dict(sorted(by_status.items())),
        "unexpected_errors": len(unexpected), "unexpected_examples": unexpected[:5],
        "busy_503": sum(r["busy_ok"] for r in done), "bad_503": sum(bool(r.get("bad_503")) for r in done),
        "latency_ms_200": {"p50": pct(ok200, 50), "p95": pct(ok200, 95), "p99": pct(ok200, 99),
                           "mean": round(1000 * statistics.fmean(ok200), 1) if ok200 else None},
        "latency_ms_all": {"p50": pct(all_lat, 50), "p95": pct(all_lat, 95)},
        "throughput_rps": round(len(done) / wall, 1), "throughput_200_rps": round(len(ok200) / wall, 1),
    }


def start_server(model: Path, port: int, args: argparse.Namespace, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fakelite.serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--concurrency", str(args.server_concurrency), "--queue", str(args.server_queue),
           "--log-level", "warning", "--workers", str(workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    # its own session: the kernel's autogroup scheduler then shares the CPU between the server and this client
    # like between two programs, instead of counting both as one session
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120, workers: int = 1,
               api_key: str | None = None) -> float:
    """Seconds until /readyz answers 200 and (several workers) every worker process exists and reports ready."""
    t0 = time.perf_counter()
    headers = {"X-API-Key": api_key} if api_key else {}
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early (code {proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200 and (workers == 1 or (
                    len(children(proc.pid)) >= workers
                    and "fakelite_model_ready 1.0" in httpx.get(url + "/metrics", headers=headers, timeout=2).text)):
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


def _stage(r: dict, stage: str, key: str) -> object:
    return (r.get("server_stages") or {}).get(stage, {}).get(key, "n/a")


def markdown(runs: list[dict], cmd: str) -> str:
    """One column per worker count."""
    r0 = runs[0]
    head = "| metric | " + " | ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in runs) + " |"

    def row(name: str, fn) -> str:
        return f"| {name} | " + " | ".join(str(fn(r)) for r in runs) + " |"

    lines = [
        "# `fakelite serve` load test",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {r0['machine']}. Server: uvicorn with `--workers N`, each worker `--concurrency "
        f"{r0['server_concurrency']} --queue {r0['server_queue']}`" + (f" `--threads {r0['threads']}`" if r0["threads"] else "")
        + f"; model `{r0['model']}` ({r0['model_bytes'] / 1e6:.1f} MB); images {r0['image_size']}×{r0['image_size']}; "
        "loopback only. The worker counts ran one after the other in this one invocation"
        + (" (with --repeats: this table is the round with the median ratio; every round is listed below)."
           if r0.get("repeats", 1) > 1 else "."),
        "",
        "Request mix: 80 % PNG, 10 % JPEG (expect 200), 5 % text named .jpg (expect 415), 5 % truncated JPEG "
        "(expect 422). A 503 counts as correct only with `Retry-After` and error code `busy`; a 200 must carry a "
        "score. Client: one asyncio process, C keep-alive HTTP/1.1 connections (raw sockets), each multipart "
        "request encoded once before the clock starts, each connection sending its next request when the answer "
        "is in; its own CPU time is in the table.",
        "",
        head,
        "|---|" + "---|" * len(runs),
        row("requests (concurrency)", lambda r: f"{r['requests']} ({r['concurrency']})"),
        row("wall time", lambda r: f"{r['wall_s']} s"),
        row("status counts", lambda r: ", ".join(f"{k}: {v}" for k, v in r["by_status"].items())),
        row("**unexpected errors**", lambda r: f"**{r['unexpected_errors']}**"),
        row("503 busy (all with Retry-After) / malformed 503s", lambda r: f"{r['busy_503']} / {r['bad_503']}"),
        row("latency of 200s p50 / p95 / p99", lambda r: f"{r['latency_ms_200']['p50']} / "
            f"**{r['latency_ms_200']['p95']}** / {r['latency_ms_200']['p99']} ms"),
        row("latency of all answers p50 / p95", lambda r: f"{r['latency_ms_all']['p50']} / {r['latency_ms_all']['p95']} ms"),
        row("throughput, all answers / **200s**", lambda r: f"{r['throughput_rps']} / **{r['throughput_200_rps']}** req/s"),
        row("200s per second vs 1 worker", lambda r: f"×{r['throughput_200_rps'] / r0['throughput_200_rps']:.2f}"),
        row("server CPU during the run (all processes) / cores it got", lambda r: f"{r['server_cpu_s']} s / "
            f"{r['server_cpu_s'] / r['wall_s']:.2f}"),
        row("CPU of each worker (its process + decode process)",
            lambda r: " / ".join(f"{v} s" for v in r.get("worker_cpu_s") or []) or "(one process)"),
        row("200s per server CPU-second", lambda r: f"{r['throughput_200_rps'] * r['wall_s'] / r['server_cpu_s']:.1f}"
            if r["server_cpu_s"] else "n/a"),
        row("load-test client CPU during the run / per request / share of client + server CPU",
            lambda r: f"{r['client_cpu_s']} s / {1000 * r['client_cpu_s'] / max(1, r['requests']):.2f} ms / "
            f"{r['client_cpu_s'] / max(1e-9, r['client_cpu_s'] + r['server_cpu_s']):.1%}"),
        row("server view (/metrics): detections finished per s", lambda r: f"{_stage(r, 'detect', 'per_s')}"),
        row("server view: mean upload / queue wait / detection (probe, decode, faces, inference) per request",
            lambda r: f"{_stage(r, 'upload', 'mean_ms')} / {_stage(r, 'queue', 'mean_ms')} / "
            f"**{_stage(r, 'detect', 'mean_ms')}** ms"),
        row("server RSS (all processes) when ready, before the warm-up requests",
            lambda r: f"{r['rss_mb']['after_ready']} MB"),
        row("server RSS during the run: first / last / max (samples)", lambda r: f"{r['rss_mb']['first']} / "
            f"{r['rss_mb']['last']} / {r['rss_mb']['max']} MB ({r['rss_mb']['samples']})"),
        row("RSS flat (last ≤ first + 10 % + 16 MB)", lambda r: "yes" if r["rss_mb"]["flat"] else "NO"),
        row("time to ready (start → every worker ready)", lambda r: f"{r['ready_s']:.1f} s"),
        row("1-min load average after the run", lambda r: f"{r['load_after']:.1f}"),
        "",
        "Latency is measured by the client, from sending the request to reading the whole answer, so it includes "
        "waiting in the server's queue. RSS is the sum over the uvicorn process and its workers, read from /proc; "
        "server CPU is the uvicorn process, its workers and their isolated decode processes. The server view comes "
        "from the service's `fakelite_detect_stage_seconds` histogram (summed over workers) read before and after "
        "the run.",
    ] + (["", f"Model: {r0['note']}"] if r0.get("note") else [])
    return "\n".join(lines) + "\n"


def stage_totals(url: str, api_key: str | None) -> dict[str, tuple[float, float]]:
    """{stage: (seconds, count)} of the server's `fakelite_detect_stage_seconds` histogram (summed over workers)."""
    text = httpx.get(url + "/metrics", headers={"X-API-Key": api_key} if api_key else {}, timeout=10).text
    out: dict[str, list[float]] = {}
    for ln in text.splitlines():
        for i, suffix in enumerate(("_sum{", "_count{")):
            if ln.startswith("fakelite_detect_stage_seconds" + suffix):
                stage = ln.split('stage="', 1)[1].split('"', 1)[0]
                out.setdefault(stage, [0.0, 0.0])[i] += float(ln.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_view(before: dict, after: dict, wall: float) -> dict:
    """Per stage: requests that passed it during the run, their mean time (ms) and completions per second."""
    out = {}
    for k, (t1, n1) in after.items():
        t0, n0 = before.get(k, (0.0, 0.0))
        n = n1 - n0
        out[k] = {"n": int(n), "mean_ms": round(1000 * (t1 - t0) / n, 1) if n else None,
                  "per_s": round(n / wall, 1) if wall else None}
    return out


# ---------------------------------------------------------------------------------------- the no-HTTP ceiling
def _ceiling_proc(model: str, files: list[str], seconds: float, threads: int, barrier, out) -> None:
    """One process doing what a worker does for each request, minus HTTP: the limits probe and `detect_file`
    (decode and faces in the isolated decode process, inference here), looping over the payload images."""
    import torch

    from fakelite.deploy.detect import detect_file
    from fakelite.deploy.isolated import image_size_isolated
    from fakelite.deploy.runtime import Detector

    torch.set_num_threads(threads)
    det = Detector.load(model, threads=threads)

    def one(path: str) -> None:
        image_size_isolated(path, timeout=30)
        res = detect_file(det, path, faces="auto", frames=32, aggregate="mean", face_detector="haar", timeout=30)
        assert res.get("score") is not None, res

    for f in files[:4]:  # warm-up, as the service's warm-up requests
        one(f)
    barrier.wait()
    t0, n, cpu0 = time.perf_counter(), 0, cpu_seconds(os.getpid())
    while time.perf_counter() - t0 < seconds:
        one(files[n % len(files)])
        n += 1
    out.put((n, time.perf_counter() - t0, cpu_seconds(os.getpid()) - cpu0))  # CPU: this process + its decoder


def ceiling_child(args: argparse.Namespace) -> None:
    """`--ceiling-child N`: N processes (spawned, one session) each run `_ceiling_proc`; prints JSON."""
    import multiprocessing as mp
    import tempfile

    n = args.ceiling_child
    rnd = random.Random(0)
    valid = [p for p in payloads(args.image_size) if p[2] == 200]  # the 200s of the request mix, same proportions
    with tempfile.TemporaryDirectory(prefix="fakelite-ceiling-") as d:
        files = []
        for i, (name, data, _) in enumerate(rnd.sample(valid, len(valid))):
            f = Path(d) / f"{i}-{name}"
            f.write_bytes(data)
            files.append(str(f))
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=_ceiling_proc, args=(str(args.model), files[i::n] + files, args.ceiling_seconds,
                                                         args.threads or 1, barrier, out)) for i in range(n)]
        for p in procs:
            p.start()
        barrier.wait()
        got = [out.get(timeout=args.ceiling_seconds + 120) for _ in procs]
        for p in procs:
            p.join()
    print(json.dumps({"processes": n, "images": sum(g[0] for g in got), "cpu_s": round(sum(g[2] for g in got), 2),
                      "wall_s": round(max(g[1] for g in got), 2),
                      "images_per_s": round(sum(g[0] / g[1] for g in got), 2)}))


def run_ceiling(args: argparse.Namespace, n: int) -> dict:
    """The same per-request work as the service, in n processes with no HTTP at all, started in their own session
    like the server; returns images/s summed over the processes and the CPU they got."""
    cmd = [sys.executable, __file__, "--model", str(args.model), "--image-size", str(args.image_size),
           "--threads", str(args.threads or 1), "--ceiling-child", str(n), "--ceiling-seconds", str(args.ceiling_seconds)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"ceiling run failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(load_before=load_before, load_after=os.getloadavg()[0])
    return res


def run_one(args: argparse.Namespace, workers: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port, args, workers)
    try:
        ready_s = wait_ready(url, proc, workers=workers, api_key=args.api_key)
        rss_ready = rss_mb(proc.pid)
        if args.warmup:  # first requests allocate lazily (thread pools, face detector, allocator arenas)
            asyncio.run(run_load(url, args.warmup * workers, min(args.concurrency, args.server_concurrency * workers),
                                 120, args.image_size, args.api_key))
        sampler = RssSampler(proc.pid)
        sampler.start()
        stages0 = stage_totals(url, args.api_key)
        load_before = os.getloadavg()[0]
        cpu0 = cpu_seconds(proc.pid)
        per_worker0 = {c: cpu_seconds(c) for c in children(proc.pid)} if workers > 1 else {}
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        res = asyncio.run(run_load(url, args.requests, args.concurrency, args.max_seconds, args.image_size,
                                   args.api_key))
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        res["server_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 2)
        # each worker's share (its process and decode process): both must have been busy for the ratio to mean much
        res["worker_cpu_s"] = [d for c, v in per_worker0.items()  # (uvicorn's idle helper process left out)
                               if (d := round(cpu_seconds(c) - v, 2)) >= 0.1]
        res["client_cpu_s"] = round(me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime, 2)
        res["server_stages"] = stage_view(stages0, stage_totals(url, args.api_key), res["wall_s"])
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        metrics = httpx.get(url + "/metrics", headers={"X-API-Key": args.api_key} if args.api_key else {}).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    vals = [v for _, v in sampler.samples]
    first, last = (vals[0], vals[-1]) if vals else (None, None)
    res["rss_series_mb"] = [round(v, 1) for v in vals[:: max(1, len(vals) // 40)]]
    res["rss_mb"] = {"samples": len(vals), "after_ready": round(rss_ready, 1) if rss_ready else None,
                     "first": round(first, 1) if vals else None,
                     "last": round(last, 1) if vals else None, "max": round(max(vals), 1) if vals else None,
                     "flat": bool(vals) and last <= first * 1.10 + 16}
    detect_200 = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                     if ln.startswith("fakelite_http_requests_total{") and 'endpoint="/v1/detect"' in ln
                     and 'code="200"' in ln)
    res.update(workers=workers, ready_s=ready_s, warmup=args.warmup * workers, load_after=os.getloadavg()[0],
               load_before=load_before,
               metrics_detect_200=detect_200)
    return res


def _per_cpu(r: dict) -> float:
    """200s per server CPU-second."""
    return r["by_status"].get("200", 0) / r["server_cpu_s"] if r["server_cpu_s"] else float("nan")


def repeats_markdown(rounds: list[dict], counts: list[int]) -> list[str]:
    """One row per round: each worker count's 200s/s, the ratio to 1 worker, and (with --ceiling) the no-HTTP rate
    of as many processes and the share of it the service reached."""
    hi = max(counts)
    ceil = any(r.get("ceiling") for r in rounds)
    head = ["round (order)", *[f"{w}w 200s/s" for w in counts], f"×({hi}w/1w)", "client CPU / server CPU"]
    if ceil:
        head += [*[f"no-HTTP {w} proc img/s" for w in counts], f"no-HTTP ×({hi}/1)",
                 *[f"service/no-HTTP {w}w: rate · per CPU-s" for w in counts]]
    head.append("load avg before → after")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rounds):
        svc = r["service"]
        row = [f"{i + 1} ({','.join(map(str, r['order']))})", *[f"{svc[w]['throughput_200_rps']}" for w in counts],
               f"×{r['ratio']:.2f}",
               " · ".join(f"{svc[w]['client_cpu_s']} / {svc[w]['server_cpu_s']} s" for w in counts)]
        if ceil:
            c = r["ceiling"]
            row += [*[f"{c[w]['images_per_s']}" for w in counts], f"×{r['ceiling_ratio']:.2f}",
                    *[f"{svc[w]['throughput_200_rps'] / c[w]['images_per_s']:.0%} · "
                      f"{_per_cpu(svc[w]) / (c[w]['images'] / c[w]['cpu_s']):.0%}" for w in counts]]
        row.append(" · ".join(f"{svc[w]['load_before']:.1f} → {svc[w]['load_after']:.1f}" for w in counts))
        lines.append("| " + " | ".join(row) + " |")
    cores = {w: [r["service"][w]["server_cpu_s"] / r["service"][w]["wall_s"] for r in rounds] for w in counts}
    eff = [_per_cpu(r["service"][hi]) / _per_cpu(r["service"][min(counts)]) for r in rounds]
    lines += ["", "Cores the server got (its CPU-seconds / wall seconds), median: "
              + ", ".join(f"{w} worker{'s' if w > 1 else ''} {statistics.median(cores[w]):.2f}" for w in counts)
              + f". 200s per server CPU-second, {hi} workers / 1 worker: median ×{statistics.median(eff):.2f} "
              f"(range ×{min(eff):.2f}–×{max(eff):.2f}; ×1 would mean an answer costs the same CPU with either worker "
              "count, so that requests/s follow the cores the workers get)."]
    ratios = [r["ratio"] for r in rounds]
    lines += ["", f"**×({hi} workers / 1 worker), 200s per second: median ×{statistics.median(ratios):.2f}, "
                  f"range ×{min(ratios):.2f}–×{max(ratios):.2f} over {len(rounds)} rounds.**"]
    if ceil:
        cr = [r["ceiling_ratio"] for r in rounds]
        lines.append(f"No HTTP at all ({hi} processes / 1 process, the same per-request work): median "
                     f"×{statistics.median(cr):.2f}, range ×{min(cr):.2f}–×{max(cr):.2f}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a .fakelite file")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=16, help="keep-alive client connections")
    ap.add_argument("--workers", default="1", help="comma list of uvicorn worker counts to run one after the other")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the worker counts (even rounds in reverse "
                                                           "order, so a drift in the machine's load cancels)")
    ap.add_argument("--ceiling", action="store_true", help="after each service run, the same per-request work in "
                                                          "as many processes with no HTTP (the rate the service "
                                                          "could reach on this machine now)")
    ap.add_argument("--ceiling-seconds", type=float, default=10.0)
    ap.add_argument("--ceiling-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--server-concurrency", type=int, default=2)
    ap.add_argument("--server-queue", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="inference threads in the server (0: runtime default)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--warmup", type=int, default=40, help="requests per worker sent (not counted) before RSS sampling")
    ap.add_argument("--out", type=Path, default=Path("docs/results/serve.md"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--note", default=None, help="a line about the model, written into the report")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model file")
    if args.ceiling_child:
        ceiling_child(args)
        return 0
    counts = [int(w) for w in args.workers.split(",")]
    if args.requests < 1 or args.concurrency < 1 or min(counts) < 1 or args.repeats < 1:
        raise SystemExit("--requests, --concurrency, --workers and --repeats must be >= 1")
    rounds: list[dict] = []
    for k in range(args.repeats):
        order = counts if k % 2 == 0 else counts[::-1]
        rnd: dict = {"order": order, "service": {}, "ceiling": {}}
        for w in order:
            res = run_one(args, w)
            res.update(note=args.note, model=args.model.name, model_bytes=args.model.stat().st_size,
                       image_size=args.image_size, server_concurrency=args.server_concurrency,
                       server_queue=args.server_queue, threads=args.threads, repeats=args.repeats,
                       machine=host_line())
            rnd["service"][w] = res
            print(json.dumps({k: res[k] for k in ("workers", "requests", "by_status", "wall_s", "server_cpu_s",
                                                  "client_cpu_s", "unexpected_errors", "busy_503", "bad_503",
                                                  "latency_ms_200", "throughput_200_rps", "server_stages",
                                                  "load_before", "load_after")}), flush=True)
            if args.ceiling:
                rnd["ceiling"][w] = run_ceiling(args, w)
                print(json.dumps({"ceiling": rnd["ceiling"][w]}), flush=True)
        lo, hi = rnd["service"][min(counts)], rnd["service"][max(counts)]
        rnd["ratio"] = hi["throughput_200_rps"] / lo["throughput_200_rps"]
        if args.ceiling:
            rnd["ceiling_ratio"] = rnd["ceiling"][max(counts)]["images_per_s"] / rnd["ceiling"][min(counts)]["images_per_s"]
        rounds.append(rnd)
    median_round = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    runs = [median_round["service"][w] for w in counts]  # the detailed table: the round with the median ratio
    cmd = "python benchmarks/load_test.py " + " ".join(a if " " not in a else repr(a) for a in (argv or sys.argv[1:]))
    text = markdown(runs, cmd)
    if args.repeats > 1 or args.ceiling:
        text += "\n## Rounds\n\n" + "\n".join(repeats_markdown(rounds, counts)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2, default=str))
    print(f"wrote {args.out}")
    all_runs = [r for rnd in rounds for r in rnd["service"].values()]
    ok = all(r["unexpected_errors"] == 0 and r["bad_503"] == 0 and r["rss_mb"]["flat"]
             and r["requests"] >= min(500, args.requests) for r in all_runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
