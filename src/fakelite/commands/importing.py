"""`fakelite import`: a public detector checkpoint (NPR, CNNDetection, torchvision ResNet) → .fakelite."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail


def import_command(
    checkpoint: Annotated[Path, typer.Argument(help="The public checkpoint (.pth/.pt/.safetensors); never unpickled")],
    format: Annotated[str, typer.Option("--format", help="npr | cnndetection | torchvision-resnet")],
    out: Annotated[Path, typer.Option("--out", help="The .fakelite to write")],
    arch: Annotated[str | None, typer.Option("--arch", help="Registry architecture (default: the format's; "
                                             "inferred from the keys for torchvision-resnet)")] = None,
    input: Annotated[str | None, typer.Option("--input", help="rgb | npr (default: the format's)")] = None,
    crop: Annotated[int | None, typer.Option(help="Evaluation centre crop (default 224)")] = None,
    resize: Annotated[int | None, typer.Option(help="Resize the short side to this before cropping (0: never; "
                                               "default: the format's evaluation policy)")] = None,
) -> None:
    """Import a public checkpoint as a .fakelite model that quantize, distill, export, eval and serve accept.

    Loads with torch.load(weights_only=True) only: a file that needs arbitrary unpickling is refused and nothing in
    it runs. Missing, unexpected and mis-shaped keys are named; the parameter count and output shape are checked;
    the file's SHA-256 and the format go into the artifact's provenance.

    Example: fakelite import NPR.pth --format npr --out runs/npr/model.fakelite && fakelite quantize --model runs/npr/model.fakelite --ptq --calib-data my_images/ --out runs/npr-w8a8 --w-bits 8 --a-bits 8 --quantizer minmax
    """
    from fakelite.artifact import save
    from fakelite.models.checkpoint_import import CheckpointError, import_checkpoint

    if out.suffix != ".fakelite":
        fail(f"--out {out}: the output must end in .fakelite")
    try:
        model, report = import_checkpoint(checkpoint, format, arch, input=input, crop=crop, resize=resize)
    except CheckpointError as e:
        fail(str(e))
    save(model, out)
    p = model.preprocess
    extra = []
    if report["wrapper"]:
        extra.append("unwrapped " + "/".join(report["wrapper"]))
    if report["prefix_stripped"]:
        extra.append(f"stripped prefix {report['prefix_stripped']!r}")
    if report["renamed"]:
        extra.append(f"renamed {len(report['renamed'])} keys ({', '.join(sorted(report['renamed'])[:2])} → fc.*)")
    if report["filled_buffers"]:
        extra.append(f"filled {len(report['filled_buffers'])} num_batches_tracked buffers")
    typer.echo(f"{checkpoint} ({report['format']}, sha256 {report['sha256'][:16]}…): {report['arch']} "
               f"{report['input']} input, {report['tensors']} tensors, {report['params']:,} parameters"
               + (f"; {'; '.join(extra)}" if extra else ""))
    typer.echo(f"preprocessing: {report['preprocess_policy']}; mean {list(p.mean)}, std {list(p.std)}")
    typer.echo(f"wrote {out}")
