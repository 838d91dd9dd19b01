"""What machine a timing came from: CPU model, the instruction sets that decide int8 speed, threads, runtimes.

Every speed figure this project writes (``fakelite bench``, ``benchmarks/speed.py``, the ``--backend auto`` probe
cache) carries ``host_info()``, so results from different hosts can be told apart: an int8 conv runs ~4× faster
with VNNI (``avx512_vnni``/``avx_vnni``: one u8×s8 dot-product instruction) than with plain AVX2 (three), and an
order of magnitude faster again on AMX tiles (``amx_int8``); on Arm, ``asimddp`` (SDOT/UDOT) and ``i8mm`` (SMMLA)
play the same role.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

# the CPU flags (as /proc/cpuinfo spells them) that change which int8/fp kernels a runtime can use
INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
              "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")
RUNTIMES = ("torch", "onnxruntime", "openvino", "ai_edge_litert", "onnx")


def _cpuinfo(text: str) -> tuple[str, list[str]]:
    """(model name, flags) from the text of /proc/cpuinfo (x86 "flags", Arm "Features")."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    return model, sorted(f for f in INT8_FLAGS if f in flags)


def _runtime_versions() -> dict[str, str | None]:
    from importlib import metadata

    names = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino",
             "ai_edge_litert": "ai-edge-litert", "onnx": "onnx"}
    out: dict[str, str | None] = {}
    for key, dist in names.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


@lru_cache(maxsize=1)
def _static_host() -> dict[str, Any]:
    model, flags = "", []
    try:
        model, flags = _cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "machine": platform.machine(),
            "flags": flags, "logical_cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "runtimes": _runtime_versions()}


def host_info(threads: int | None = None) -> dict[str, Any]:
    """The host record of a measurement.

    Returns {"cpu": model name, "machine": "x86_64"|"aarch64"|..., "flags": [the INT8_FLAGS present],
    "logical_cpus", "usable_cpus" (this process's affinity), "threads" (the inference threads the measurement used,
    when given), "os", "python", "runtimes": {torch, onnxruntime, openvino, ai_edge_litert, onnx: version or None}}.
    Reads /proc/cpuinfo where it exists; never raises.
    """
    info = dict(_static_host())
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cpus"] = os.cpu_count()
    if threads is not None:
        info["threads"] = int(threads)
    return info


def host_kind(info: dict[str, Any] | None = None) -> str:
    """A short label of the int8 capability: "x86 AMX", "x86 AVX-512 VNNI", "x86 AVX-VNNI", "x86 AVX2 (no VNNI)",
    "Arm dotprod+i8mm", "Arm dotprod", or the machine name — the key of the per-host tables in docs."""
    info = info or host_info()
    f = set(info.get("flags", []))
    if "amx_int8" in f:
        return "x86 AMX"
    if "avx512_vnni" in f:
        return "x86 AVX-512 VNNI"
    if "avx_vnni" in f:
        return "x86 AVX-VNNI"
    if "avx2" in f:
        return "x86 AVX2 (no VNNI)"
    if "asimddp" in f:
        return "Arm dotprod+i8mm" if "i8mm" in f else "Arm dotprod"
    return str(info.get("machine", "unknown"))


def host_key(info: dict[str, Any] | None = None) -> str:
    """Stable 12-hex key of what decides kernel speed (CPU model, flags, runtime versions): the cache key of
    `--backend auto` probes, so a new CPU or a runtime upgrade re-probes."""
    info = info or host_info()
    ident = {k: info.get(k) for k in ("cpu", "machine", "flags", "runtimes")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for tables: "AMD EPYC (x86 AVX-512 VNNI: avx2 avx512f avx512_vnni ...), 1 thread, ort 1.32.0"."""
    info = info or host_info()
    rt = info.get("runtimes", {})
    vers = ", ".join(f"{k} {v}" for k, v in rt.items() if v and k in ("torch", "onnxruntime", "openvino"))
    th = f", {info['threads']} thread(s)" if "threads" in info else ""
    return f"{info['cpu']} ({host_kind(info)}; flags: {' '.join(info.get('flags', [])) or 'none'}){th}; {vers}"
