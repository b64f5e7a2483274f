"""``edgeline train``: image folder -> scikit-learn -> ONNX -> int8 -> quality gate -> signed bundle."""

from __future__ import annotations

from pathlib import Path

import click

from converters.estimators import ESTIMATORS
from converters.gate import GateConfig
from converters.inspection_build import InspectionResult, build_inspection
from converters.inspection_report import summary_lines
from converters.line_gate import LineTargets
from converters.pipeline import BuildResult, build_bundle
from converters.registration_fit import REGISTER_CHOICES
from converters.selection import QUANT_CHOICES
from edgeline.cli.build_common import bundle_summary, echo_json, parse_params, progress_bars
from edgeline.cli.options import json_option, keys_option
from edgeline.core.protocol.manifest import Thresholds

GATE_HELP = "Quality gate: no bundle when the int8 model is worse than float by more than these margins."


def gate_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--no-fallback", is_flag=True, help="With --quantization auto, do not fall back to dynamic int8."
    )(fn)
    fn = click.option(
        "--min-agreement",
        type=click.FloatRange(0, 1),
        default=0.99,
        show_default=True,
        help="Smallest accepted label agreement between int8 and float.",
    )(fn)
    fn = click.option(
        "--max-accuracy-drop",
        type=click.FloatRange(0, 100),
        default=1.0,
        show_default=True,
        help="Largest accepted accuracy drop of int8 vs float, in percentage points. " + GATE_HELP,
    )(fn)
    fn = click.option(
        "--quantization",
        type=click.Choice(QUANT_CHOICES),
        default="auto",
        show_default=True,
        help="static: QDQ int8 calibrated on training images; dynamic: int8 weights; auto: static, "
        "then dynamic if static fails the gate; float: no quantization.",
    )(fn)
    return fn


def parse_share(value: str, what: str) -> float:
    """'1%' or '0.01' -> 0.01."""
    text = value.strip()
    try:
        share = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{what} must be a share like 1% or 0.01, got {value!r}") from None
    if not 0.0 < share < 1.0:
        raise click.BadParameter(f"{what} must be between 0 and 100%, got {value!r}")
    return share


def parse_planted(value: str) -> float:
    """'80%', '0.8' or '0' -> a share in [0, 1] (0 turns the planted-blemish check off)."""
    text = value.strip()
    try:
        share = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"--min-planted-found must be a share like 80% or 0.8, got {value!r}") from None
    if not 0.0 <= share <= 1.0:
        raise click.BadParameter(f"--min-planted-found must be between 0 and 100%, got {value!r}")
    return share


def line_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--force-unverified",
        is_flag=True,
        help="Sign the bundle even when the line gate refuses it; the manifest and 'edgeline registry show' "
        "then say UNVERIFIED and why.",
    )(fn)
    fn = click.option(
        "--no-photometric",
        is_flag=True,
        help="Do not add randomly lit copies of the training images (offset, gain, vignette, light gradient).",
    )(fn)
    fn = click.option(
        "--folds",
        type=click.IntRange(2, 20),
        default=5,
        show_default=True,
        help="Cross-validation folds: every image is judged by a model that never saw it.",
    )(fn)
    fn = click.option(
        "--min-class-images",
        type=click.IntRange(2),
        default=20,
        show_default=True,
        help="Defect kinds with fewer images are caught by the good-part model, not learned by a classifier.",
    )(fn)
    fn = click.option(
        "--register",
        type=click.Choice(REGISTER_CHOICES),
        default="auto",
        show_default=True,
        help="Part registration before features: auto (fitted on good parts), none, translate, rigid.",
    )(fn)
    fn = click.option(
        "--operate-for",
        type=click.Choice(["false-reject", "escape"]),
        default="false-reject",
        show_default=True,
        help="Which target the decision threshold is chosen for; the other is gated.",
    )(fn)
    fn = click.option(
        "--min-planted-found",
        default="80%",
        show_default=True,
        help="Refuse a good-part model that finds less of the faint blemishes planted on held-out good "
        "parts (it would be blind on these parts); 0% turns the check off.",
    )(fn)
    fn = click.option(
        "--max-escape",
        default="5%",
        show_default=True,
        help="Largest accepted escape rate (defective parts passed as good); 'none' to measure only.",
    )(fn)
    fn = click.option(
        "--max-false-reject",
        default="1%",
        show_default=True,
        help="Largest accepted false-reject rate (good parts scrapped or sent to review).",
    )(fn)
    fn = click.option(
        "--model",
        "kind",
        type=click.Choice(["auto", "anomaly", "hybrid", "classifier"]),
        default="auto",
        show_default=True,
        help="anomaly: learn from good parts only; hybrid: good-part model + classifier for defect kinds with "
        "enough images; auto: hybrid when a defect kind has enough images, else anomaly; classifier: the "
        "classifier alone, gated on int8 fidelity only (no escape/false-reject gate).",
    )(fn)
    return fn


@click.command()
@click.argument("dataset", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Bundle directory to write.",
)
@click.option(
    "--estimator",
    type=click.Choice(list(ESTIMATORS)),
    default="mlp",
    show_default=True,
    help="; ".join(f"{k}: {v}" for k, v in ESTIMATORS.items()),
)
@click.option("--name", default="inspection", show_default=True, help="Model name (letters, digits, . _ -).")
@click.option("--version", "version", type=click.IntRange(1), default=1, show_default=True, help="Model version.")
@keys_option(param="key_dir")
@gate_options
@line_options
@click.option(
    "--param", "params", multiple=True, help="Estimator parameter, scikit-learn style: --param pca__n_components=32."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split and the estimator.")
@click.option(
    "--test-size", type=click.FloatRange(0.05, 0.5), default=0.25, show_default=True, help="Held-out fraction."
)
@click.option("--ok-label", default="ok", show_default=True, help="The class of good parts.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Smallest probability for a defect verdict.",
)
@click.option("--valid-days", type=click.FloatRange(0.01), default=365.0, show_default=True, help="Manifest lifetime.")
@click.option("--force", is_flag=True, help="Overwrite a bundle already in --out.")
@json_option
def train(
    dataset: tuple[Path, ...],
    out_dir: Path,
    estimator: str,
    name: str,
    version: int,
    key_dir: Path,
    quantization: str,
    max_accuracy_drop: float,
    min_agreement: float,
    no_fallback: bool,
    kind: str,
    max_false_reject: str,
    max_escape: str,
    min_planted_found: str,
    operate_for: str,
    register: str,
    min_class_images: int,
    folds: int,
    no_photometric: bool,
    force_unverified: bool,
    params: tuple[str, ...],
    seed: int,
    test_size: float,
    ok_label: str,
    min_confidence: float,
    valid_days: float,
    force: bool,
    as_json: bool,
) -> None:
    """Train an inspection model on DATASET (one or more image folders with a subfolder per class; good
    parts alone are enough), convert it to ONNX, quantize it to int8, gate it in the line's terms
    (escape and false-reject rates with 95% intervals, judged out of fold) and on int8 fidelity, and
    write a signed bundle to --out (model.onnx + manifest.json, report in --out/report). Exits 1 when
    a gate refuses the model, naming the figure and the margin."""
    gate = GateConfig(max_accuracy_drop, min_agreement, fallback_to_dynamic=not no_fallback)
    thresholds = Thresholds(ok_label=ok_label, defect_min_confidence=min_confidence)
    overrides = parse_params(params)
    if kind != "classifier":
        targets = LineTargets(
            max_false_reject=parse_share(max_false_reject, "--max-false-reject"),
            max_escape=None if max_escape.strip().lower() == "none" else parse_share(max_escape, "--max-escape"),
            operate_for="max_escape" if operate_for == "escape" else "max_false_reject",
            min_planted_found=parse_planted(min_planted_found),
        )
        with progress_bars(not as_json) as hook:
            res: InspectionResult = build_inspection(
                list(dataset),
                out_dir,
                kind=kind,
                targets=targets,
                register=register,
                estimator=estimator,
                params=overrides or None,
                name=name,
                version=version,
                key_dir=key_dir,
                quantization=quantization,
                gate=gate,
                folds=folds,
                min_class_images=min_class_images,
                photometric=not no_photometric,
                seed=seed,
                thresholds=thresholds,
                valid_days=valid_days,
                force=force,
                force_unverified=force_unverified,
                progress=hook,
            )
        if as_json:
            echo_json(
                {
                    "ok": True,
                    "bundle": str(res.bundle_dir),
                    "report": str(res.report_json),
                    "report_png": str(res.report_png),
                    "kind": res.kind,
                    "metrics": res.metrics,
                    "line_gate": res.gate.to_dict(),
                    "unverified": list(res.manifest.unverified),
                    "quantization": res.quantization.to_dict(),
                }
            )
            return
        q = res.quantization
        click.echo(f"bundle   {res.bundle_dir}  ({name} v{version}, {res.kind})")
        for text in summary_lines(res.report):
            click.echo(f"         {text}")
        click.echo(f"model    {q.mode}, {q.model_bytes:,} bytes ({q.size_ratio:.1%} of float {q.float_bytes:,})")
        click.echo(f"report   {res.report_json}, {res.report_png}")
        return
    with progress_bars(not as_json) as hook:
        result: BuildResult = build_bundle(
            list(dataset),
            out_dir,
            estimator=estimator,
            name=name,
            version=version,
            key_dir=key_dir,
            quantization=quantization,
            gate=gate,
            params=overrides or None,
            seed=seed,
            test_size=test_size,
            thresholds=thresholds,
            valid_days=valid_days,
            force=force,
            progress=hook,
        )
    if as_json:
        conversion = {
            "label_agreement": result.conversion.label_agreement,
            "max_prob_diff": result.conversion.max_prob_diff,
        }
        echo_json(bundle_summary(result, report_png=str(result.report_png), conversion=conversion))
        return
    q, g = result.quantization, result.gate.figures
    click.echo(f"bundle   {result.bundle_dir}  ({name} v{version}, {estimator})")
    click.echo(f"model    {q.mode}, {q.model_bytes:,} bytes ({q.size_ratio:.1%} of float {q.float_bytes:,}); {q.note}")
    acc = f"accuracy {g.quant_accuracy:.4f} (float {g.float_accuracy:.4f})" if g.quant_accuracy is not None else ""
    click.echo(f"gate     passed: {acc}, label agreement {g.label_agreement:.4f}, max prob diff {g.max_prob_diff:.3f}")
    conv = result.conversion
    click.echo(
        f"parity   scikit-learn vs ONNX: agreement {conv.label_agreement:.4f}, max diff {conv.max_prob_diff:.1e}"
    )
    click.echo(f"report   {result.report_json}, {result.report_png}")
