"""``edgeline import``: bring your own ONNX image model."""

from __future__ import annotations

from pathlib import Path

import click

from converters.errors import ConverterError
from converters.gate import GateConfig
from converters.importer import ImportResult, import_model
from edgeline.cli.build_common import (
    bundle_summary,
    echo_json,
    parse_floats,
    parse_size,
    progress_bars,
    validation_message,
)
from edgeline.cli.options import json_option, keys_option
from edgeline.cli.train import gate_options
from edgeline.core.protocol.manifest import PreprocessSpec, Thresholds


@click.command("import")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--calib",
    "calib_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Calibration images: a folder of images, or class subfolders (then accuracy is gated too).",
)
@click.option("--labels", required=True, help="Comma-separated class labels in the model's output order.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Bundle directory to write.",
)
@click.option("--name", default="imported", show_default=True, help="Model name.")
@click.option("--version", "version", type=click.IntRange(1), default=1, show_default=True, help="Model version.")
@keys_option(param="key_dir")
@gate_options
@click.option("--size", default="64x64", show_default=True, help="Model input WIDTHxHEIGHT.")
@click.option(
    "--color",
    type=click.Choice(["gray", "bgr", "rgb"]),
    default="gray",
    show_default=True,
    help="Model input colour layout.",
)
@click.option("--roi", default=None, help="Region of the frame to crop first: x,y,w,h as fractions of the frame.")
@click.option("--scale", type=float, default=1 / 255, show_default=True, help="Pixel scale before mean/std.")
@click.option("--mean", default="0", show_default=True, help="Per-channel mean (comma-separated) after scaling.")
@click.option("--std", default="1", show_default=True, help="Per-channel std (comma-separated) after scaling.")
@click.option("--softmax", is_flag=True, help="The model outputs logits: append a Softmax.")
@click.option("--ok-label", default="ok", show_default=True, help="The class of good parts.")
@click.option("--force", is_flag=True, help="Overwrite a bundle already in --out.")
@json_option
def import_onnx(
    model: Path,
    calib_dir: Path,
    labels: str,
    out_dir: Path,
    name: str,
    version: int,
    key_dir: Path,
    quantization: str,
    max_accuracy_drop: float,
    min_agreement: float,
    no_fallback: bool,
    size: str,
    color: str,
    roi: str | None,
    scale: float,
    mean: str,
    std: str,
    softmax: bool,
    ok_label: str,
    force: bool,
    as_json: bool,
) -> None:
    """Quantize, gate and bundle MODEL, an existing ONNX image classifier (input [N, C, H, W] float32,
    output class probabilities), e.g. a small CNN exported from another framework. Frames are
    preprocessed by edgeline's shared code into the tensor the model expects (--size, --color, --roi,
    --scale, --mean, --std), on the device exactly as here."""
    try:
        spec = PreprocessSpec(
            color=color,
            roi=parse_floats(roi, 4, "roi") if roi else None,
            size=parse_size(size),
            scale=scale,
            mean=parse_floats(mean, what="mean"),
            std=parse_floats(std, what="std"),
            features="tensor",
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise click.BadParameter(validation_message(exc)) from exc
    label_list = [s.strip() for s in labels.split(",") if s.strip()]
    try:
        gate = GateConfig(max_accuracy_drop, min_agreement, fallback_to_dynamic=not no_fallback)
        thresholds = Thresholds(ok_label=ok_label)
    except ValueError as exc:
        raise ConverterError(str(exc), reason="bad_parameter") from exc
    with progress_bars(not as_json) as hook:
        result: ImportResult = import_model(
            model,
            calib_dir,
            out_dir,
            labels=label_list,
            spec=spec,
            name=name,
            version=version,
            key_dir=key_dir,
            quantization=quantization,
            gate=gate,
            append_softmax=softmax,
            thresholds=thresholds,
            force=force,
            progress=hook,
        )
    if as_json:
        echo_json(bundle_summary(result))
        return
    q, g = result.quantization, result.gate.figures
    click.echo(f"bundle   {result.bundle_dir}  ({name} v{version}, imported from {model.name})")
    click.echo(f"model    {q.mode}, {q.model_bytes:,} bytes ({q.size_ratio:.1%} of float); {q.note}")
    click.echo(f"gate     passed: label agreement {g.label_agreement:.4f} on {g.rows} held-out calibration images")
