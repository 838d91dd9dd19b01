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


def _cpu_clock(text: str) -> tuple[float | None, str, int | None]:
    """(the highest "cpu MHz" of /proc/cpuinfo or None, vendor_id, cpu family) from its text."""
    mhz: list[float] = []
    vendor, family = "", None
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        try:
            if key == "cpu mhz":
                mhz.append(float(val))
            elif key == "vendor_id" and not vendor:
                vendor = val.strip()
            elif key == "cpu family" and family is None:
                family = int(val)
        except ValueError:
            continue
    return (max(mhz) if mhz else None), vendor, family


def _lscpu_max_mhz() -> float | None:
    """lscpu's "CPU max MHz" where the kernel exposes it (often absent in VMs); None otherwise."""
    import shutil
    import subprocess

    if shutil.which("lscpu") is None:
        return None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, val = line.partition(":")
        if key.strip().lower() == "cpu max mhz":
            try:
                return float(val)
            except ValueError:
                return None
    return None


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
    model, flags, mhz, vendor, family = "", [], None, "", None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        model, flags = _cpuinfo(text)
        mhz, vendor, family = _cpu_clock(text)
    except OSError:
        pass
    max_mhz = _lscpu_max_mhz()
    return {"cpu": model or platform.processor() or platform.machine(), "machine": platform.machine(),
            "flags": flags, "logical_cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "runtimes": _runtime_versions(),
            "mhz": max_mhz or mhz, "mhz_source": "lscpu max MHz" if max_mhz else ("/proc/cpuinfo cpu MHz" if mhz
                                                                                  else None),
            "vendor": vendor or None, "cpu_family": family}


def reported_host() -> dict[str, Any]:
    """The host record as the system reports it (/proc/cpuinfo, lscpu), without the FAKELITE_CPU_MHZ override: the
    "reported" side of benchmarks/cpu_clock.py's measured-vs-reported clock. Same keys as `host_info` minus
    "usable_cpus" and "threads"; never raises."""
    return dict(_static_host())


def host_info(threads: int | None = None) -> dict[str, Any]:
    """The host record of a measurement.

    Returns {"cpu": model name, "machine": "x86_64"|"aarch64"|..., "flags": [the INT8_FLAGS present],
    "logical_cpus", "usable_cpus" (this process's affinity), "threads" (the inference threads the measurement used,
    when given), "os", "python", "runtimes": {torch, onnxruntime, openvino, ai_edge_litert, onnx: version or None},
    "mhz": core clock in MHz (the environment variable FAKELITE_CPU_MHZ when set, e.g. the single-thread turbo clock
    that benchmarks/cpu_clock.py measures; else lscpu "CPU max MHz", else the highest /proc/cpuinfo "cpu MHz" — in a VM
    that is the nominal clock, and a turbo clock above it makes the int8 peak an underestimate; None if unknown),
    "mhz_source", "vendor" (x86 vendor_id), "cpu_family"}.
    Reads /proc/cpuinfo where it exists; never raises (an unparsable FAKELITE_CPU_MHZ is ignored).
    """
    info = reported_host()
    override = os.environ.get("FAKELITE_CPU_MHZ", "").strip()
    try:
        if override and 0 < float(override) < float("inf"):
            info["mhz"], info["mhz_source"] = float(override), "FAKELITE_CPU_MHZ"
    except ValueError:
        pass
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


# Peak int8 MACs per cycle per core, by the best int8 instruction set present. Each row: (flag, MACs per instruction,
# instructions per cycle, source). The per-port assumptions are stated here and in docs/deploy.md ("Roofline").
# - AMX-INT8 (Sapphire Rapids and later): TDPBUSD multiplies a 16×64 u8 tile by a 64×16 s8 tile = 16 384 MACs and
#   issues once per 16 cycles → 1024 MACs/cycle/core (Intel: "2048 INT8 operations per cycle per core";
#   Intel 64 and IA-32 Architectures Optimization Reference Manual, ch. "Intel AMX").
# - AVX-512 VNNI: VPDPBUSD zmm = 16 int32 lanes × 4 u8·s8 products = 64 MACs per instruction; 2 per cycle on cores
#   with two 512-bit integer-multiply ports (Intel Xeon since Cascade Lake: ports 0 and 5; AMD Zen 5: full 512-bit
#   datapath) → 128. AMD Zen 4 (x86 family 25) runs 512-bit ops as two 256-bit halves → 1 per cycle → 64.
# - AVX-VNNI (256-bit VPDPBUSD ymm): 32 MACs per instruction, 2 ports → 64.
# - AVX-512BW without VNNI: VPMADDUBSW + VPMADDWD + VPADDD = 3 instructions per 64 MACs, 2 ports → 42.7.
# - AVX2 without VNNI: the same 3-instruction chain on ymm = 32 MACs per 3 instructions, 2 ports → 21.3.
# - Arm: SDOT/UDOT (asimddp) 16 MACs per 128-bit instruction, 2 pipes → 32; SMMLA (i8mm) 32 MACs, 2 pipes → 64.
INT8_MACS_PER_CYCLE = (
    ("amx_int8", 16384 / 16, 1.0, "AMX TDPBUSD: 16x16x64 MACs per 16 cycles"),
    ("avx512_vnni", 64, 2.0, "AVX-512 VNNI VPDPBUSD zmm: 64 MACs/instr, 2 ports"),
    ("avx_vnni", 32, 2.0, "AVX-VNNI VPDPBUSD ymm: 32 MACs/instr, 2 ports"),
    ("avx512bw", 64 / 3, 2.0, "AVX-512BW VPMADDUBSW+VPMADDWD+VPADDD: 64 MACs per 3 instr, 2 ports"),
    ("avx2", 32 / 3, 2.0, "AVX2 VPMADDUBSW+VPMADDWD+VPADDD: 32 MACs per 3 instr, 2 ports"),
    ("i8mm", 32, 2.0, "Arm SMMLA: 32 MACs/instr, 2 pipes"),
    ("asimddp", 16, 2.0, "Arm SDOT: 16 MACs/instr, 2 pipes"),
)


def int8_macs_per_cycle(info: dict[str, Any] | None = None) -> tuple[float, str] | None:
    """(peak int8 MACs per cycle per core, the INT8_MACS_PER_CYCLE row it came from) for the best int8 instruction
    set in info["flags"]; None when none is known. AMD family 25 (Zen 4) gets one 512-bit VNNI per cycle."""
    info = info or host_info()
    flags = set(info.get("flags", []))
    for flag, per_instr, per_cycle, source in INT8_MACS_PER_CYCLE:
        if flag in flags:
            if flag == "avx512_vnni" and info.get("vendor") == "AuthenticAMD" and info.get("cpu_family") == 25:
                per_cycle, source = 1.0, "AVX-512 VNNI VPDPBUSD zmm: 64 MACs/instr, 1 per cycle (Zen 4 double-pumped)"
            return per_instr * per_cycle, source
    return None


def int8_peak(info: dict[str, Any] | None = None, threads: int | None = None) -> dict[str, Any] | None:
    """The host's int8 peak: threads × clock × int8 MACs/cycle/core (`int8_macs_per_cycle`).

    Returns {"gmac_per_s": peak in 10⁹ MACs/s, "threads", "mhz", "macs_per_cycle", "source"}, or None when the
    clock or the int8 instruction set is unknown. threads defaults to info["threads"], else 1, and is capped at
    info["usable_cpus"] (or logical_cpus) when known. Example: 2 threads × 2596.096 MHz × 128 (AVX-512 VNNI, 2 ports)
    = 664.6 GMAC/s.
    """
    info = info or host_info(threads)
    mpc = int8_macs_per_cycle(info)
    mhz = info.get("mhz")
    if mpc is None or not mhz:
        return None
    th = int(threads or info.get("threads") or 1)
    cap = info.get("usable_cpus") or info.get("logical_cpus")
    if cap:
        th = min(th, int(cap))
    return {"gmac_per_s": round(th * float(mhz) * mpc[0] / 1e3, 1), "threads": th, "mhz": float(mhz),
            "macs_per_cycle": round(mpc[0], 2), "source": mpc[1]}


def rates(macs: int | None, median_ms: float, info: dict[str, Any] | None = None,
          threads: int | None = None) -> dict[str, Any]:
    """{"macs", "gmac_per_s": macs / latency, "int8_peak_gmac_per_s", "peak_fraction": achieved / peak} of one
    latency (ms, batch 1: pass batch × MACs); the values are None where the MACs or the peak are unknown."""
    peak = int8_peak(info, threads)
    g = round(macs / median_ms / 1e6, 2) if macs and median_ms > 0 else None
    return {"macs": int(macs) if macs else None, "gmac_per_s": g,
            "int8_peak_gmac_per_s": peak["gmac_per_s"] if peak else None,
            "peak_fraction": round(g / peak["gmac_per_s"], 4) if (g and peak) else None,
            "peak_assumption": peak["source"] if peak else None}
