"""Writing and reading ONNX files: the exporter call, the fakelite header in metadata_props, op counts, and the
graph pieces every ONNX kernel set writes (constants, conv attributes, the input quantizer's codes).

Every exported file embeds the fakelite header (arch, preprocessing, threshold, quantization plan) as the ONNX
metadata_props entry "fakelite", so an .onnx alone is a complete deployable (`Detector.load(x.onnx)`).
Used by the exporters `fakelite.deploy.onnx` (ORT integer graph, FP32, int8 static) and `fakelite.deploy.qdq`
(standard QDQ graph), and by the runtime (`read_metadata`).
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite.artifact import content_hash, jsonable

OPSET = 17
META_KEY = "fakelite"

# ----------------------------------------------------------------------------- header in metadata_props


def export_header(model: nn.Module, kind: str, **extra: Any) -> dict[str, Any]:
    """The .fakelite header of `model` (from its artifact when loaded from one), plus an "export" section."""
    header = copy.deepcopy(getattr(model, "header", None) or {})
    if not header:
        header = {
            "format_version": 1,
            "arch": {"name": getattr(model, "arch_name", type(model).__name__),
                     "kwargs": dict(getattr(model, "arch_kwargs", {}))},
            "quant": getattr(model, "fakelite_quant", None),
        }
        try:
            header["content_hash"] = content_hash({k: v.detach().cpu() for k, v in model.state_dict().items()})
            header = jsonable(header)
        except Exception:  # noqa: BLE001 - a hash is a convenience here, never a reason to fail
            pass
    header["preprocess"] = model.preprocess.to_dict()
    header["threshold"] = float(getattr(model, "threshold", header.get("threshold", 0.5)))
    header["threshold_source"] = getattr(model, "threshold_source", header.get("threshold_source"))
    header["temperature"] = float(getattr(model, "temperature", header.get("temperature")) or 1.0)
    header.pop("tensors", None)  # tensor shapes of the artifact do not describe the graph
    header["export"] = {"format": "onnx", "kind": kind, "opset": OPSET, **extra}
    return header


def write_metadata(path: Path, header: dict[str, Any], edit: Callable[[Any], Any] | None = None) -> None:
    """Replace the metadata_props of the ONNX file `path` by the fakelite header (in place); `edit(model)`, when
    given, rewrites the loaded ModelProto in the same load/save pass (e.g. `qdq.anchor_low_precision`)."""
    import onnx

    m = onnx.load(str(path))
    if edit is not None:
        edit(m)
    del m.metadata_props[:]
    m.metadata_props.add(key=META_KEY, value=json.dumps(header))
    m.producer_name = "fakelite"
    onnx.save(m, str(path))


# ONNX Runtime graph rewrites that fold a Conv's following Mul/Add by a constant into its weights/bias: they turn the
# exact QDQ form's integer-valued weights into rounded float products (`qdq.conv_to_float_exact`), so sessions of an
# `exact` QDQ file disable them (measured: with them 62/748 FaceSynth images differ from the integer model by up to
# 0.06 logit, without them none by more than 2e-6 — docs/deploy.md, "Parity of the QDQ graph").
ORT_EXACT_DISABLED_OPTIMIZERS = ("ConvMulFusion", "ConvAddFusion")


def ort_disabled_optimizers(header: dict[str, Any] | None) -> list[str]:
    """The ONNX Runtime optimizers to disable for a file with this fakelite header ([] for all but exact QDQ)."""
    exp = (header or {}).get("export") or {}
    return list(ORT_EXACT_DISABLED_OPTIMIZERS) if exp.get("kind") == "qdq" and exp.get("exact") else []


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The fakelite header embedded in an ONNX file (ValueError if absent)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    raise ValueError(f"{path}: ONNX file without fakelite metadata (export it with `fakelite export`)")


# ----------------------------------------------------------------------------- the exporter call


def torch_export(module: nn.Module, path: Path, size: int, opset: int = OPSET) -> None:
    """TorchScript ONNX export of `module` on a (1, 3, size, size) input "input" → "logit", dynamic batch/H/W."""
    dummy = torch.zeros(1, 3, size, size)
    module.eval()
    # The tracer warns about shape checks and constant tensors that are constant by design (CQB shortcut shapes,
    # quantizer thresholds), and torch warns that this (fast, single-file) exporter is the legacy one: both by choice.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logit"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logit": {0: "batch"}},
            do_constant_folding=True,
        )


# ----------------------------------------------------------------------------- graph pieces of the kernels


def const(g, value: Any, dtype: torch.dtype):
    """A Constant node of `value` as `dtype` in the symbolic graph `g`."""
    return g.op("Constant", value_t=torch.as_tensor(value, dtype=dtype))


def conv_attrs(p: dict[str, Any]) -> dict[str, Any]:
    """The ONNX Conv-family attributes of a conv plan (kernel, strides, pads, dilations, group)."""
    ph, pw = p["padding"]
    return {"kernel_shape_i": p["kernel"], "strides_i": p["stride"], "pads_i": [ph, pw, ph, pw],
            "dilations_i": p["dilation"], "group_i": p["groups"]}


def quant_act_symbolic(g, x, p: dict[str, Any]):
    """float → uint8 codes of an input quantizer plan in standard ops (uniform: QuantizeLinear [+ uint8 Clip];
    thresholds: #{tᵢ ≤ x} as GreaterOrEqual/Where on uint8, or a ReduceSum for many thresholds)."""
    from torch.onnx import TensorProtoDataType as TP  # noqa: N817

    if p["kind"] == "uniform":
        s, z, qmax = p["scale"], p["zp"], p["qmax"]
        # QuantizeLinear saturates to [0, 255]; a ≤7-bit grid is then clipped on the uint8 codes — the same
        # codes as clamp(round(x/s)+z, 0, qmax), at a quarter of the memory traffic of a float Clip.
        q = g.op("QuantizeLinear", x, const(g, s, torch.float32), const(g, z, torch.uint8))
        if qmax < 255:
            q = g.op("Clip", q, const(g, 0, torch.uint8), const(g, qmax, torch.uint8))
        return q
    if len(p["thresholds"]) <= 15:
        # k = #{tᵢ ≤ x} for sorted tᵢ as a chain of uint8 Where ops, lowest threshold first: one float
        # comparison per threshold and byte-sized selects (ORT has no uint8 Add; a ReduceSum over a stacked
        # comparison tensor was 5× slower)
        k = const(g, 0, torch.uint8)
        for i, ti in enumerate(p["thresholds"]):
            ge = g.op("GreaterOrEqual", x, const(g, ti, torch.float32))
            k = g.op("Where", ge, const(g, i + 1, torch.uint8), k)
        return k
    t = torch.tensor(p["thresholds"], dtype=torch.float32).reshape(-1, 1, 1, 1, 1)
    xu = g.op("Unsqueeze", x, const(g, [0], torch.int64))
    ge = g.op("Cast", g.op("GreaterOrEqual", xu, const(g, t, torch.float32)), to_i=TP.FLOAT)
    k = g.op("ReduceSum", ge, const(g, [0], torch.int64), keepdims_i=0)
    return g.op("Cast", k, to_i=TP.UINT8)


# ----------------------------------------------------------------------------- inspection


def op_counts(path: str | Path) -> dict[str, int]:
    """{op type: count} of the graph in the ONNX file `path`."""
    import onnx

    m = onnx.load(str(path))
    return dict(Counter(n.op_type for n in m.graph.node))


def optimized_op_counts(path: str | Path) -> dict[str, int]:
    """Op types of the graph ORT actually runs (after its fusions, e.g. QDQ groups → QLinearConv)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(str(out))
    return dict(Counter(n.op_type for n in m.graph.node))
