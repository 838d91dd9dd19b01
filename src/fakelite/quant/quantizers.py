"""Quantizer modules: each holds its parameters/buffers and calls the maths in numerics.py.

Weight quantizers are per output channel and signed; activation quantizers are per tensor (RSign: per channel),
unsigned after ReLU and asymmetric (zero point / offset) where the input can be negative (h-swish, linear
bottlenecks, NPR). Every quantizer has:
- `forward(x)` — fake quantization (training: STE gradients; eval: the inference function);
- `calibrating` — when True, activation quantizers only observe (PTQ statistics / data-driven init) and return x;
- `integer_view()` — its integer representation for exporters (weights: codes + per-channel scale);
- activations: `thresholds()` and `levels()` — code = #{t ≤ x}, output = levels[code] (every kind can be written
  that way; uniform kinds also report scale/zero_point).
Data-dependent state (weight scales of MinMax/N2UQ/binary, activation ranges) lives in buffers, updated in
training/calibration and frozen in eval, so a saved model reproduces its eval outputs bit-exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import numerics as nx

WEIGHT_KINDS = ("minmax", "percentile", "lsq", "n2uq", "binary")
ACT_KINDS = ("minmax", "percentile", "lsq", "n2uq", "binary", "slr-minmax", "slr-percentile", "slr-lsq", "slr-n2uq")


class Quantizer(nn.Module):
    """Base class. `initialized` becomes True after data-driven init or after loading a state dict."""

    kind = "fp"

    def __init__(self, bits: int = 32):
        super().__init__()
        self.bits = int(bits)
        self.calibrating = False
        self.initialized = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.initialized = True

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}"


class NoQuant(Quantizer):
    """Full precision (identity)."""

    kind = "fp"

    def __init__(self) -> None:
        super().__init__(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        return {"type": "float"}


# ============================================================================ weights


class WeightQuantizer(Quantizer):
    """Per-output-channel signed weight quantizer. `code_kind` names the decoder in numerics.decode_weight."""

    code_kind = "affine"
    decode_state = ("scale",)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Unsigned integer codes in [0, 2^b − 1] (int64)."""
        raise NotImplementedError

    def signed_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer codes, per-channel scale) with Ŵ = scale·code (zero point 0)."""
        raise NotImplementedError

    def integer_view(self, w: torch.Tensor) -> dict:
        codes, scale = self.signed_codes(w)
        return {"type": "per_channel_symmetric", "bits": self.bits, "codes": codes.to(torch.int32),
                "scale": scale.detach().clone(), "zero_point": torch.zeros_like(scale, dtype=torch.int32), "axis": 0}


class MinMaxWeight(WeightQuantizer):
    """Symmetric per-channel s = max|W_c|/Qp (or a percentile of |W_c|); recomputed each training step."""

    kind = "minmax"

    def __init__(self, bits: int, weight: torch.Tensor, percentile: float | None = None):
        super().__init__(bits)
        self.percentile = percentile
        if percentile is not None:
            self.kind = "percentile"
        self.qmin, self.qmax = nx.qrange(bits, True)
        self.register_buffer("scale", self._scale(weight))
        self.initialized = True

    def _scale(self, w: torch.Tensor) -> torch.Tensor:
        a = w.detach().abs().reshape(w.shape[0], -1).float()
        m = a.amax(1) if self.percentile is None else torch.quantile(a, self.percentile / 100.0, dim=1)
        return nx.symmetric_scale(m, self.bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.copy_(self._scale(w))
        return nx.fake_quant_affine(w, self.scale, 0.0, self.qmin, self.qmax)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return nx.affine_codes(w, self.scale, 0.0, self.qmin, self.qmax) - self.qmin

    def signed_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nx.affine_codes(w, self.scale, 0.0, self.qmin, self.qmax), self.scale


class LSQWeight(WeightQuantizer):
    """LSQ: learned per-channel step s (init 2·mean|W_c|/√Qp), gradient scale 1/√(N·Qp)."""

    kind = "lsq"

    def __init__(self, bits: int, weight: torch.Tensor):
        super().__init__(bits)
        self.qmin, self.qmax = nx.qrange(bits, True)
        self.scale = nn.Parameter(nx.lsq_init_step(weight.reshape(weight.shape[0], -1), self.qmax, dim=(1,)))
        self.initialized = True

    def _s(self) -> torch.Tensor:
        return self.scale.clamp_min(1e-8)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g = nx.lsq_grad_factor(w.numel(), self.qmax)
        return nx.fake_quant_affine(w, self._s(), 0.0, self.qmin, self.qmax, grad_factor=g)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return nx.affine_codes(w, self._s(), 0.0, self.qmin, self.qmax) - self.qmin

    def signed_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nx.affine_codes(w, self._s(), 0.0, self.qmin, self.qmax), self._s().detach()


class N2UQWeight(WeightQuantizer):
    """N2UQ weights: S = γ·mean|W_c| (buffer, updated in training), learnable clip c (init 2.0), uniform grid."""

    kind = "n2uq"
    code_kind = "n2uq"
    decode_state = ("scale", "clip")

    def __init__(self, bits: int, weight: torch.Tensor, clip_init: float = 2.0):
        super().__init__(bits)
        self.register_buffer("scale", nx.n2uq_weight_scale(weight, bits))
        self.clip = nn.Parameter(torch.tensor(float(clip_init)))
        self.initialized = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.copy_(nx.n2uq_weight_scale(w, self.bits))
        return nx.n2uq_weight(w, self.scale, self.clip, self.bits)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return nx.n2uq_weight_codes(w, self.scale, self.clip, self.bits)

    def signed_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Ŵ = S·c/(2^b−1)·(k − (2^b−1)/2) = [S·c/(2(2^b−1))]·(2k − (2^b−1)): odd integers, scale S·c/(2(2^b−1))
        m = 2**self.bits - 1
        k = self.codes(w)
        return 2 * k - m, self.scale * self.clip.detach() / (2 * m)


class BinaryWeight(WeightQuantizer):
    """1-bit weights sign(W)·mean|W_c| (ReActNet), clipped STE."""

    kind = "binary"
    code_kind = "binary"

    def __init__(self, weight: torch.Tensor):
        super().__init__(1)
        self.register_buffer("scale", nx.binary_weight_scale(weight))
        self.initialized = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.scale.copy_(nx.binary_weight_scale(w))
        return nx.binary_weight(w, self.scale)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return nx.binary_weight_codes(w)

    def signed_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * self.codes(w) - 1, self.scale


# ============================================================================ activations


class ActQuantizer(Quantizer):
    """Per-tensor activation quantizer. Subclasses implement observe/quantize/thresholds/levels."""

    def __init__(self, bits: int, signed: bool):
        super().__init__(bits)
        self.signed = bool(signed)

    def observe(self, x: torch.Tensor) -> None:  # calibration statistics / data-driven init
        pass

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x.detach())
            return x
        return self.quantize(x)

    def thresholds(self) -> torch.Tensor:
        raise NotImplementedError

    def levels(self) -> torch.Tensor:
        raise NotImplementedError

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(x.detach().contiguous(), self.thresholds().detach().contiguous(), right=True)

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        return {"type": "thresholds", "bits": self.bits, "thresholds": self.thresholds().detach().clone(),
                "levels": self.levels().detach().clone()}

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, signed={self.signed}"


class _AffineAct(ActQuantizer):
    """Shared by MinMax and LSQ: a uniform grid [0, 2^b−1] with scale and integer zero point."""

    def _scale_zp(self) -> tuple[torch.Tensor, torch.Tensor | float]:
        raise NotImplementedError

    def thresholds(self) -> torch.Tensor:
        s, z = self._scale_zp()
        return nx.affine_thresholds(s, z, self.qmin, self.qmax)

    def levels(self) -> torch.Tensor:
        s, z = self._scale_zp()
        return nx.affine_levels(s, z, self.qmin, self.qmax)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self._scale_zp()
        return nx.affine_codes(x, s, z, self.qmin, self.qmax)

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        s, z = self._scale_zp()
        zp = int(torch.round(z).item()) if isinstance(z, torch.Tensor) else int(z)
        d = super().integer_view()
        d.update(type="uniform", scale=float(s.detach().reshape(())), zero_point=zp, qmin=self.qmin, qmax=self.qmax)
        return d


class MinMaxAct(_AffineAct):
    """Affine range from data: running min/max during calibration (or a percentile), EMA during QAT."""

    kind = "minmax"

    def __init__(self, bits: int, signed: bool, percentile: float | None = None, momentum: float = 0.1):
        super().__init__(bits, signed)
        self.percentile = percentile
        if percentile is not None:
            self.kind = "percentile"
        self.momentum = momentum
        self.qmin, self.qmax = nx.qrange(bits, False)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.ones(()))
        self._n_obs = 0

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.percentile is None:
            lo, hi = x.min(), x.max()
        else:
            lo, hi = nx.percentile(x, 100.0 - self.percentile), nx.percentile(x, self.percentile)
        if not self.signed:
            lo = torch.zeros_like(lo)
        return lo.float(), hi.float()

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x)
        with torch.no_grad():
            if not self.initialized or self._n_obs == 0:
                self.lo.copy_(lo)
                self.hi.copy_(hi)
            elif self.percentile is None:  # running min/max
                self.lo.copy_(torch.minimum(self.lo, lo))
                self.hi.copy_(torch.maximum(self.hi, hi))
            else:  # mean of per-batch percentiles
                n = self._n_obs
                self.lo.copy_((self.lo * n + lo) / (n + 1))
                self.hi.copy_((self.hi * n + hi) / (n + 1))
        self._n_obs += 1
        self.initialized = True

    def _scale_zp(self) -> tuple[torch.Tensor, torch.Tensor]:
        return nx.minmax_affine_params(self.lo, self.hi, self.qmin, self.qmax)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = self._batch_range(x.detach())
            with torch.no_grad():
                if not self.initialized:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.initialized = True
                else:
                    self.lo.lerp_(lo, self.momentum)
                    self.hi.lerp_(hi, self.momentum)
        s, z = self._scale_zp()
        return nx.fake_quant_affine(x, s, z, self.qmin, self.qmax)


class LSQAct(_AffineAct):
    """LSQ (unsigned) / LSQ+ (signed: learnable integer-rounded zero point) activation quantizer."""

    kind = "lsq"

    def __init__(self, bits: int, signed: bool):
        super().__init__(bits, signed)
        self.qmin, self.qmax = nx.qrange(bits, False)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.zero_point = nn.Parameter(torch.tensor(0.0)) if signed else None

    def observe(self, x: torch.Tensor) -> None:
        if self.initialized:
            return
        with torch.no_grad():
            s = nx.lsq_init_step(x, self.qmax)
            if self.signed:
                lo = torch.clamp(x.min(), max=0.0)
                s = torch.maximum(s, (x.max() - lo) / self.qmax / 2)  # keep both tails in reach
                self.zero_point.copy_(torch.clamp(torch.round(-lo / s), 0, self.qmax))
            self.scale.copy_(s)
        self.initialized = True

    def _scale_zp(self) -> tuple[torch.Tensor, torch.Tensor | float]:
        s = self.scale.clamp_min(1e-8)
        if self.zero_point is None:
            return s, 0.0
        return s, torch.clamp(self.zero_point, self.qmin, self.qmax)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.observe(x.detach())
        s, z = self._scale_zp()
        g = nx.lsq_grad_factor(x[0].numel() if x.dim() > 1 else x.numel(), self.qmax)
        return nx.fake_quant_affine(x, s, z, self.qmin, self.qmax, grad_factor=g)


class N2UQAct(ActQuantizer):
    """N2UQ: learnable start and intervals a₁..a_n (init 2/n), thresholds at midpoints, levels Δ·k (+offset)."""

    kind = "n2uq"

    def __init__(self, bits: int, signed: bool, floor: float = 1e-3, hi_percentile: float = 99.9):
        super().__init__(bits, signed)
        n = 2**bits - 1
        self.n = n
        self.floor = floor
        self.hi_percentile = hi_percentile
        self.a = nn.Parameter(torch.full((n,), 2.0 / n))
        self.start = nn.Parameter(torch.tensor(0.0))
        self.delta = nn.Parameter(torch.tensor(2.0 / n))
        self.offset = nn.Parameter(torch.tensor(0.0)) if signed else None
        self._obs: list[tuple[float, float]] = []

    def observe(self, x: torch.Tensor) -> None:
        """Data-driven init: start = min (signed) or 0, intervals cover [start, P99.9] equally; Δ = a."""
        lo = float(x.min()) if self.signed else 0.0
        hi = float(nx.percentile(x, self.hi_percentile))
        self._obs.append((lo, hi))
        lo = sum(o[0] for o in self._obs) / len(self._obs)
        hi = max(sum(o[1] for o in self._obs) / len(self._obs), lo + self.n * self.floor * 2)
        step = (hi - lo) / self.n
        with torch.no_grad():
            self.start.fill_(lo)
            self.a.fill_(step)
            self.delta.fill_(step)
            if self.offset is not None:
                self.offset.fill_(lo)
        self.initialized = True

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return nx.n2uq_act(x, self.start, self.a, self.delta, self.offset)

    def thresholds(self) -> torch.Tensor:
        return nx.n2uq_thresholds(self.start.detach(), nx.n2uq_floor(self.a.detach(), self.floor))

    def levels(self) -> torch.Tensor:
        k = torch.arange(self.n + 1, dtype=torch.float32)
        off = 0.0 if self.offset is None else float(self.offset.detach())
        return self.delta.detach().reshape(()) * k + off

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        d = super().integer_view()
        off = 0.0 if self.offset is None else float(self.offset.detach())
        delta = float(self.delta.detach())
        d.update(scale=delta, zero_point=-off / delta if delta else 0.0, uniform_input=False)
        return d


class SLRAct(ActQuantizer):
    """Shifted Logarithmic Redistribution: base quantizer applied to ln(X + off), off = min(max|X|, ε) + τ.

    Training: the log form (gradients to τ and x through ln). Eval: the folded look-up form
    code = #{t' ≤ X}, t' = exp(t) − off, output = base levels — what an exporter runs.
    max|X| is a running maximum buffer (updated in training and calibration, frozen in eval).
    """

    def __init__(self, base: ActQuantizer, eps: float = 1.0, tau_init: float = 0.0):
        if eps < 1.0:
            raise ValueError(f"SLR needs eps >= 1 (QMDD eq. 10), got {eps}")
        super().__init__(base.bits, base.signed)
        self.kind = f"slr-{base.kind}"
        self.base = base
        self.eps = float(eps)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self.register_buffer("max_abs", torch.tensor(float(eps)))

    def _update_max(self, x: torch.Tensor) -> None:
        m = x.detach().abs().max().float()
        with torch.no_grad():
            if not self.initialized:
                self.max_abs.copy_(m)
            else:
                self.max_abs.copy_(torch.maximum(self.max_abs, m))
        self.initialized = True

    def offset(self) -> torch.Tensor:
        return nx.slr_offset(self.max_abs, self.eps, self.tau)

    def log_domain(self, x: torch.Tensor) -> torch.Tensor:
        return nx.slr_log(x, self.offset())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._update_max(x)
            self.base.observe(self.log_domain(x.detach()).detach())
            return x
        if self.training:
            self._update_max(x)
            return self.base.quantize(self.log_domain(x))
        return nx.threshold_quant(x, self.thresholds(), self.levels())

    def thresholds(self) -> torch.Tensor:
        return nx.slr_fold_thresholds(self.base.thresholds(), self.offset())

    def levels(self) -> torch.Tensor:
        return self.base.levels()

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        d = self.base.integer_view()
        d.update(type="thresholds", thresholds=self.thresholds().detach().clone(), levels=self.levels().clone(),
                 uniform_input=False, log_thresholds=self.base.thresholds().detach().clone(),
                 slr_offset=float(self.offset().detach()))
        return d


class BinaryAct(ActQuantizer):
    """ReActNet RSign: sign(x − α_c), learnable per-channel α, ApproxSign gradient.

    α starts at 0 (ReActNet) and, when calibration data is seen, at the per-channel mean of the calibration
    activations. ReActNet binarises signed (BN-output) tensors, where 0 splits the data; here most inputs follow a
    ReLU, and sign(x − 0) of a non-negative x is +1 everywhere: every binarised input is constant, every output
    channel has zero variance, BN divides by √ε and the gradients reach inf within a step (and PTQ gives a constant
    score). The channel mean splits non-negative and signed inputs alike.
    """

    kind = "binary"

    def __init__(self, channels: int):
        super().__init__(1, True)
        self.alpha = nn.Parameter(torch.zeros(channels))
        self._obs_sum: torch.Tensor | None = None
        self._obs_n = 0

    def observe(self, x: torch.Tensor) -> None:
        """Calibration: α_c = mean of channel c over every observed batch (channel axis 1)."""
        dims = [d for d in range(x.dim()) if d != 1]
        s = x.detach().double().sum(dim=dims)
        self._obs_sum = s if self._obs_sum is None else self._obs_sum + s
        self._obs_n += x.numel() // max(1, x.shape[1])
        with torch.no_grad():
            self.alpha.copy_((self._obs_sum / self._obs_n).to(self.alpha.dtype))
        self.initialized = True

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return nx.rsign(x, self.alpha, 1)

    def thresholds(self) -> torch.Tensor:
        return self.alpha.detach()

    def levels(self) -> torch.Tensor:
        return torch.tensor([-1.0, 1.0])

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return (x.detach() - nx._bcast(self.alpha.detach(), x, 1) >= 0).to(torch.int64)

    def integer_view(self, w: torch.Tensor | None = None) -> dict:
        return {"type": "sign", "bits": 1, "thresholds": self.alpha.detach().clone(), "axis": 1,
                "levels": torch.tensor([-1.0, 1.0]), "scale": 2.0, "zero_point": 0.5}


# ============================================================================ factories


def make_weight_quantizer(kind: str, bits: int | None, weight: torch.Tensor, percentile: float = 99.99) -> Quantizer:
    """Weight quantizer for a layer. bits None/≥32 → FP; 1 bit always uses the binary quantizer."""
    if bits is None or bits >= 32 or kind == "fp":
        return NoQuant()
    kind = kind.removeprefix("slr-")
    if bits == 1 or kind == "binary":
        return BinaryWeight(weight)
    if kind == "minmax":
        return MinMaxWeight(bits, weight)
    if kind == "percentile":
        return MinMaxWeight(bits, weight, percentile=percentile)
    if kind == "lsq":
        return LSQWeight(bits, weight)
    if kind == "n2uq":
        return N2UQWeight(bits, weight)
    raise ValueError(f"unknown weight quantizer {kind!r}; choose one of {', '.join(WEIGHT_KINDS)}")


def make_act_quantizer(kind: str, bits: int | None, signed: bool, channels: int, percentile: float = 99.99,
                       slr_eps: float = 1.0, slr_tau_init: float = 0.0) -> Quantizer:
    """Activation quantizer for a layer input. bits None/≥32 → FP."""
    if bits is None or bits >= 32 or kind == "fp":
        return NoQuant()
    if kind == "binary":
        return BinaryAct(channels)
    if kind.startswith("slr-"):
        base = make_act_quantizer(kind.removeprefix("slr-"), bits, True, channels, percentile)
        if not isinstance(base, ActQuantizer) or isinstance(base, BinaryAct):
            raise ValueError(f"SLR needs a threshold base quantizer, not {kind!r}")
        return SLRAct(base, eps=slr_eps, tau_init=slr_tau_init)
    if kind == "minmax":
        return MinMaxAct(bits, signed)
    if kind == "percentile":
        return MinMaxAct(bits, signed, percentile=percentile)
    if kind == "lsq":
        return LSQAct(bits, signed)
    if kind == "n2uq":
        return N2UQAct(bits, signed)
    raise ValueError(f"unknown activation quantizer {kind!r}; choose one of {', '.join(ACT_KINDS)}")
