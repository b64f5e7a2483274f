"""``edgeline predict --bundle B PATH``: batch inference over an image folder, an image or a video."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge_agent.batch import RecordWriter, count_items, iter_items, predict_items
from edge_agent.inference import load_and_check
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.schema import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_CEILING


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Bundle directory (model.onnx + signed manifest.json).",
)
@click.option(
    "--trust",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("keys/trust.json"),
    show_default=True,
    help="Trust store with the root public keys.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file (default: standard output).",
)
@click.option("--no-expiry", is_flag=True, help="Accept an expired manifest.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="ONNX Runtime threads.")
@click.option(
    "--max-pixels",
    type=click.IntRange(1, MAX_IMAGE_PIXELS_CEILING),
    default=DEFAULT_MAX_IMAGE_PIXELS,
    show_default=True,
    help="Refuse images (and video frames) declaring more pixels than this, before decoding them.",
)
def predict(
    path: Path, bundle: Path, trust: Path, fmt: str, out: Path | None, no_expiry: bool, threads: int, max_pixels: int
) -> None:
    """Run BUNDLE's model over PATH (an image folder, in name order; a single image; or a video file,
    frame by frame) and write one row per image or frame: verdict, class, confidence and per-class
    probabilities.

    The bundle is verified and self-tested first. Images are decoded by the agent's own decoder (as
    in the local API: EXIF orientation applied, truncated or oversized images refused), and frames go
    through the same preprocessing, model and thresholds as the live agent, so the verdicts are the
    agent's. Unreadable images get a row with an error; the command then exits 1 after writing every
    other row."""
    model = load_and_check(bundle, TrustStore.load(trust), threads=threads, check_expiry=not no_expiry)
    total = count_items(path)
    items = iter_items(path, max_pixels)
    errors: list[str] = []
    n = 0
    fh: TextIO = sys.stdout if out is None else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
    console = Console(stderr=True)
    try:
        writer = RecordWriter(fh, fmt, model.manifest.labels)
        with Progress(
            TextColumn("[bold]predict"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("predict", total=total)
            for rec in predict_items(model, items):
                writer.write(rec)
                n += 1
                if rec.get("error"):
                    errors.append(f"{rec['ref']}: {rec['error']}")
                progress.advance(task)
    finally:
        if out is not None:
            fh.close()
    m = model.manifest
    click.echo(f"{n} rows from {path} with {m.name} v{m.version}" + (f" -> {out}" if out else ""), err=True)
    if errors:
        shown = "\n  ".join(errors[:20])
        raise click.ClickException(f"{len(errors)} of {n} items could not be inspected:\n  {shown}")
