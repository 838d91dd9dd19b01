"""Swap a model's Conv2d/Linear layers for quantized ones, from a plain-dataclass config.

`quantize(model, QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq", cqb=True))` works in place and returns the
model. The resolved per-layer plan is written to `model.fakelite_quant` (JSON-able) so `fakelite.artifact` can
save it and `quantize_from_meta` can rebuild the same structure at load time.

Resolution order for each Conv2d/Linear (module order): include/exclude patterns (fnmatch on the module name;
excluded layers stay FP) → the first and last eligible layers (stem conv, classifier) follow `first_last`
("8bit": `first_last_bits` with `first_last_quantizer`; "fp": left in full precision; "target": like the rest)
→ `layers` overrides, pattern by pattern in insertion order (later patterns win). BatchNorm stays float.
Activation signedness is probed once (random input through the eval-mode model): a layer whose input went
negative gets an asymmetric activation quantizer (e.g. after h-swish or a linear bottleneck, or the NPR stem).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from fakelite.utils.modules import set_module
from fakelite.utils.progress import progress_bar

from .cqb import attach_cqb, cqb_candidates
from .layers import QuantConv2d, QuantLinear, is_quant_layer
from .quantizers import ACT_KINDS, ActQuantizer, Quantizer, make_act_quantizer, make_weight_quantizer
from .veft import attach_veft

QUANTIZER_FAMILIES = ("minmax", "percentile", "lsq", "n2uq", "slr-minmax", "slr-percentile", "slr-lsq", "slr-n2uq",
                      "binary")
FP_BITS = 32
META_VERSION = 1


@dataclass
class LayerQuantSpec:
    """Per-layer overrides (None = inherit). bits ≥ 32 means full precision for that operand."""

    w_bits: int | None = None
    a_bits: int | None = None
    quantizer: str | None = None  # family, e.g. "slr-n2uq" (weights use the base kind: n2uq)
    w_quantizer: str | None = None  # weight kind override (minmax|percentile|lsq|n2uq|binary)
    a_quantizer: str | None = None  # activation kind override (any of ACT_KINDS)
    a_signed: bool | None = None  # None = probed
    cqb: bool | None = None  # False forbids CQB on this layer

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerQuantSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class QuantConfig:
    """What to quantize and how. Example: QuantConfig(w_bits=2, a_bits=2, quantizer="slr-n2uq", cqb=True)."""

    w_bits: int = 2
    a_bits: int = 2
    quantizer: str = "n2uq"
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    first_last: str = "8bit"  # "8bit" | "fp" | "target"
    first_last_bits: int = 8
    first_last_quantizer: str | None = None  # None: lsq (minmax/percentile for those families)
    layers: dict[str, LayerQuantSpec] = field(default_factory=dict)
    cqb: bool = False
    cqb_alpha_init: float = 0.9
    cqb_layers: list[str] | None = None  # fnmatch patterns; None = every quantized conv inside a residual block
    slr_eps: float = 1.0
    slr_tau_init: float = 0.0
    percentile: float = 99.99
    probe_size: int = 64

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZER_FAMILIES:
            raise ValueError(f"unknown quantizer {self.quantizer!r}; choose one of {', '.join(QUANTIZER_FAMILIES)}")
        if self.first_last not in ("8bit", "fp", "target"):
            raise ValueError(f"first_last must be '8bit', 'fp' or 'target', not {self.first_last!r}")
        for b in (self.w_bits, self.a_bits):
            if not (1 <= int(b) <= 8 or int(b) >= FP_BITS):
                raise ValueError(f"bits must be 1..8 (or 32 for full precision), got {b}")
        if self.quantizer == "binary":  # binary is 1-bit by definition (resolve_plan gives every target layer W1A1)
            self.w_bits = self.a_bits = 1
        self.layers = {k: (v if isinstance(v, LayerQuantSpec) else LayerQuantSpec.from_dict(v))
                       for k, v in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["layers"] = {k: v.to_dict() for k, v in self.layers.items()}
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ----------------------------------------------------------------------------- helpers


def _match(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _eligible(model: nn.Module, cfg: QuantConfig) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and not is_quant_layer(m):
            if _match(name, cfg.include) and not _match(name, cfg.exclude):
                out.append((name, m))
    return out


def probe_signed_inputs(model: nn.Module, names: list[str], size: int = 64, seed: int = 0) -> dict[str, bool]:
    """Which layers ever see a negative input (one random batch through the eval-mode model)."""
    mods = dict(model.named_modules())
    mins: dict[str, float] = {}
    hooks = []
    for n in names:
        def hook(_m, inp, _out, n=n):
            mins[n] = min(mins.get(n, float("inf")), float(inp[0].detach().min()))
        hooks.append(mods[n].register_forward_hook(hook))
    was_training = model.training
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, size, size, generator=g)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: mins.get(n, 0.0) < 0 for n in names}


def _auto_first_last_kind(family: str) -> str:
    base = family.removeprefix("slr-")
    return base if base in ("minmax", "percentile") else "lsq"


def resolve_plan(model: nn.Module, cfg: QuantConfig) -> dict[str, dict[str, Any]]:
    """The per-layer plan (only layers that get quantized appear) without changing the model."""
    layers = _eligible(model, cfg)
    if not layers:
        return {}
    first, last = layers[0][0], layers[-1][0]
    if cfg.cqb_layers is None:
        cqb_names = set(cqb_candidates(model))
    else:
        cqb_names = {n for n, m in layers if isinstance(m, nn.Conv2d) and _match(n, cfg.cqb_layers)}
    plan: dict[str, dict[str, Any]] = {}
    for name, m in layers:
        w_bits, a_bits, family = cfg.w_bits, cfg.a_bits, cfg.quantizer
        w_kind: str | None = None
        a_kind: str | None = None
        edge = name in (first, last)
        if edge and cfg.first_last == "fp":
            w_bits = a_bits = FP_BITS
        elif edge and cfg.first_last == "8bit":
            w_bits = a_bits = cfg.first_last_bits
            w_kind = a_kind = cfg.first_last_quantizer or _auto_first_last_kind(family)
        if family == "binary" and not (edge and cfg.first_last != "target"):
            w_bits = a_bits = 1
        a_signed = None
        use_cqb = cfg.cqb and name in cqb_names and not edge
        for pattern, spec in cfg.layers.items():
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            if spec.quantizer is not None:
                family, w_kind, a_kind = spec.quantizer, None, None
            w_bits = spec.w_bits if spec.w_bits is not None else w_bits
            a_bits = spec.a_bits if spec.a_bits is not None else a_bits
            w_kind = spec.w_quantizer or w_kind
            a_kind = spec.a_quantizer or a_kind
            a_signed = spec.a_signed if spec.a_signed is not None else a_signed
            if spec.cqb is not None:
                use_cqb = bool(spec.cqb) and cfg.cqb and isinstance(m, nn.Conv2d)
        w_bits = FP_BITS if w_bits is None or w_bits >= FP_BITS else int(w_bits)
        a_bits = FP_BITS if a_bits is None or a_bits >= FP_BITS else int(a_bits)
        if w_bits == FP_BITS and a_bits == FP_BITS:
            continue
        w_kind = w_kind or family.removeprefix("slr-")
        a_kind = a_kind or family
        if w_bits == 1:
            w_kind = "binary"
        if w_bits == FP_BITS:
            w_kind = "fp"
        if a_bits == FP_BITS:
            a_kind = "fp"
        if a_kind == "binary" and a_bits != 1:
            a_bits = 1
        if a_kind not in ACT_KINDS + ("fp",):
            raise ValueError(f"{name}: unknown activation quantizer {a_kind!r}")
        plan[name] = {
            "type": "conv" if isinstance(m, nn.Conv2d) else "linear",
            "w_bits": w_bits, "a_bits": a_bits, "w_quantizer": w_kind, "a_quantizer": a_kind,
            "a_signed": a_signed, "cqb": bool(use_cqb and w_bits < FP_BITS),
        }
    unknown = [n for n, p in plan.items() if p["a_signed"] is None]
    if unknown:
        signed = probe_signed_inputs(model, unknown, cfg.probe_size)
        for n in unknown:
            plan[n]["a_signed"] = signed[n]
    return plan


def _build_layer(m: nn.Module, spec: dict[str, Any], cfg: QuantConfig) -> nn.Module:
    wq = make_weight_quantizer(spec["w_quantizer"], spec["w_bits"], m.weight.detach(), percentile=cfg.percentile)
    channels = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
    aq = make_act_quantizer(spec["a_quantizer"], spec["a_bits"], bool(spec["a_signed"]), channels,
                            percentile=cfg.percentile, slr_eps=cfg.slr_eps, slr_tau_init=cfg.slr_tau_init)
    if isinstance(m, nn.Conv2d):
        q = QuantConv2d.from_float(m, wq, aq)
        if spec.get("cqb"):
            attach_cqb(q, cfg.cqb_alpha_init)
    else:
        q = QuantLinear.from_float(m, wq, aq)
    if spec.get("veft"):  # DeFakeQ hook: output channels kept at higher precision (quant/veft.py)
        attach_veft(q, spec["veft"])
    return q


def _apply_plan(model: nn.Module, plan: dict[str, dict[str, Any]], cfg: QuantConfig) -> nn.Module:
    mods = dict(model.named_modules())
    for name, spec in plan.items():
        if name not in mods:
            raise ValueError(f"quantization plan names layer {name!r}, which this model does not have")
        set_module(model, name, _build_layer(mods[name], spec, cfg))
    model.fakelite_quant = {"version": META_VERSION, "config": cfg.to_dict(), "plan": plan}
    return model


# ----------------------------------------------------------------------------- public API


def quantize(model: nn.Module, config: QuantConfig | None = None) -> nn.Module:
    """Replace Conv2d/Linear layers by QuantConv2d/QuantLinear per `config` (in place); returns the model.

    Sets `model.fakelite_quant = {"version", "config", "plan"}`. Activation quantizers that need data (MinMax,
    percentile; LSQ/N2UQ data-driven init) are set by `calibrate(model, batches)` before use.

    >>> from fakelite.models import create_model
    >>> m = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=2, a_bits=2, quantizer="lsq"))
    >>> m.fakelite_quant["plan"]["layer1.0.conv1"]["w_bits"]
    2
    """
    cfg = config or QuantConfig()
    if getattr(model, "fakelite_quant", None):
        raise ValueError("model is already quantized")
    return _apply_plan(model, resolve_plan(model, cfg), cfg)


def quantize_from_meta(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """Rebuild the quantized structure recorded in `model.fakelite_quant` (as saved in an artifact)."""
    if not meta or "plan" not in meta:
        raise ValueError("quantization metadata without a plan")
    cfg = QuantConfig.from_dict(meta.get("config", {}))
    return _apply_plan(model, {k: dict(v) for k, v in meta["plan"].items()}, cfg)


def quant_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) for every QuantConv2d/QuantLinear."""
    for n, m in model.named_modules():
        if is_quant_layer(m):
            yield n, m


def quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    for n, m in model.named_modules():
        if isinstance(m, Quantizer):
            yield n, m


@contextmanager
def calibrating(model: nn.Module):
    """Within the block activation quantizers observe data and pass activations through unquantized."""
    acts = [m for _, m in quantizers(model) if isinstance(m, ActQuantizer)]
    for m in acts:
        m.calibrating = True
    try:
        yield model
    finally:
        for m in acts:
            m.calibrating = False


def calibrate(model: nn.Module, batches: Iterable, quiet: bool = True) -> nn.Module:
    """PTQ calibration / data-driven init: run `batches` ((x, ...) tuples or tensors) through the eval-mode model."""
    was_training = model.training
    model.eval()
    batches = list(batches)
    with torch.no_grad(), calibrating(model), progress_bar("calibrating", len(batches), quiet=quiet) as advance:
        for b in batches:
            model(b[0] if isinstance(b, tuple | list) else b)
            advance()
    model.train(was_training)
    return model


def quant_param_groups(model: nn.Module, quant_lr_factor: float = 0.1, lr: float | None = None) -> list[dict]:
    """Optimizer groups: quantizer parameters at lr × quant_lr_factor (N2UQ recipe), everything else at lr.

    Usable as `fit(..., param_groups=lambda m: quant_param_groups(m, 0.1, cfg.lr))`.
    """
    qids = {id(p) for _, q in quantizers(model) for p in q.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in qids]
    qp = [p for p in model.parameters() if p.requires_grad and id(p) in qids]
    g0: dict[str, Any] = {"params": rest, "name": "model"}
    g1: dict[str, Any] = {"params": qp, "name": "quantizers"}
    if lr is not None:
        g0["lr"] = lr
        g1["lr"] = lr * quant_lr_factor
    return [g for g in (g0, g1) if g["params"]]


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a conv (in module order) into it, for deployment (in place).

    FP convs get folded weights/bias; quantized convs keep their codes and get a per-channel output affine
    (post_scale, post_bias), applied after the CQB mix. BNs become Identity. The result is for export/inference
    only (its state dict no longer matches the training structure, so don't save it as an artifact).
    """
    model.eval()
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, prev), (cname, cur) in zip(children, children[1:], strict=False):
            if not (isinstance(prev, nn.Conv2d) and isinstance(cur, nn.BatchNorm2d)):
                continue
            if cur.num_features != prev.out_channels or cur.running_var is None:
                continue
            with torch.no_grad():
                m = cur.weight / torch.sqrt(cur.running_var + cur.eps)
                b = cur.bias - cur.running_mean * m
                if is_quant_layer(prev):
                    if prev.post_scale is not None:
                        prev.post_bias = prev.post_bias * m + b
                        prev.post_scale = prev.post_scale * m
                    else:
                        prev.post_scale, prev.post_bias = m.clone(), b.clone()
                else:
                    prev.weight.mul_(m.reshape(-1, 1, 1, 1))
                    if prev.bias is None:
                        prev.bias = nn.Parameter(b.clone())
                    else:
                        prev.bias.copy_(prev.bias * m + b)
            setattr(parent, cname, nn.Identity())
    model.bn_folded = True
    return model
