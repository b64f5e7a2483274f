"""``edgeline dataset``: synthetic line images and videos; dataset inspection."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import Progress

from converters.cli_common import echo_json, err_console, fail, run_or_fail
from converters.dataset import dataset_sha256, read_image, scan_image_folder
from converters.errors import ConverterError, DatasetError
from converters.synth import CLASSES, Conditions, Lighting, generate_dataset, write_line_video


@click.group()
def dataset() -> None:
    """Make and inspect image datasets. A dataset is a folder with one subfolder of PNG/JPEG images per
    class; 'synth' renders one of a simulated inspection line (and a video of it for the agent)."""


@dataset.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", type=click.IntRange(1, 100_000), default=400, show_default=True, help="Images per class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same images.")
@click.option("--classes", default=",".join(CLASSES), show_default=True, help="Comma-separated classes to render.")
@click.option("--brightness", type=float, default=0.0, show_default=True, help="Lighting offset in grey levels.")
@click.option("--contrast", type=float, default=1.0, show_default=True, help="Contrast gain around mid-grey.")
@click.option("--vignette", type=float, default=0.0, show_default=True, help="Corner darkening, 0..0.9.")
@click.option("--blur", type=float, default=0.6, show_default=True, help="Largest Gaussian blur sigma (px).")
@click.option("--noise", type=float, default=3.0, show_default=True, help="Sensor noise sigma (grey levels).")
@click.option("--jitter", type=float, default=6.0, show_default=True, help="Position jitter (px).")
@click.option("--rotation", type=float, default=3.0, show_default=True, help="Rotation jitter (degrees).")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default="png", show_default=True)
@click.option("--no-images", is_flag=True, help="Only write the video.")
@click.option(
    "--video", type=click.Path(dir_okay=False, path_type=Path), help="Also write a line video (.avi/.mp4/.mkv)."
)
@click.option(
    "--video-parts", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Parts in the video."
)
@click.option("--fps", type=float, default=10.0, show_default=True, help="Video frame rate.")
@click.option(
    "--defect-rate",
    type=click.FloatRange(0, 1),
    default=0.4,
    show_default=True,
    help="Share of defective parts in the video.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def synth(
    out: Path,
    per_class: int,
    seed: int,
    classes: str,
    brightness: float,
    contrast: float,
    vignette: float,
    blur: float,
    noise: float,
    jitter: float,
    rotation: float,
    image_format: str,
    no_images: bool,
    video: Path | None,
    video_parts: int,
    fps: float,
    defect_rate: float,
    as_json: bool,
) -> None:
    """Render a seeded synthetic inspection line into OUT/<class>/*.png: machined plates on a conveyor,
    classes ok, scratch, dent and missing_hole, with controllable lighting, blur, noise and jitter.
    A darker line for drift tests: --brightness -50 --contrast 0.75."""
    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    try:
        cond = Conditions(
            lighting=Lighting(brightness, contrast, vignette),
            blur=blur,
            noise=noise,
            jitter_px=jitter,
            rotation_deg=rotation,
        )
    except ConverterError as exc:
        raise fail(exc, as_json) from exc
    summary: dict[str, object] = {"ok": True, "seed": seed, "lighting": cond.lighting.__dict__}
    with Progress(console=err_console, disable=as_json) as bars:
        if not no_images:
            task = bars.add_task("rendering images", total=per_class * len(names))
            result = run_or_fail(
                lambda: generate_dataset(
                    out,
                    per_class,
                    seed,
                    conditions=cond,
                    classes=names,
                    image_format=image_format,  # type: ignore[arg-type]
                    progress=lambda n: bars.advance(task, n),
                ),
                as_json,
            )
            summary |= {"out": str(out), "counts": result.counts}
        if video is not None:
            vtask = bars.add_task("rendering video", total=None)
            truth = run_or_fail(
                lambda: write_line_video(
                    video,
                    video_parts,
                    seed,
                    conditions=cond,
                    classes=names,
                    defect_rate=defect_rate,
                    fps=fps,
                    progress=lambda n: bars.advance(vtask, n),
                ),
                as_json,
            )
            summary |= {"video": str(video), "frames": len(truth.frames), "parts": len(truth.parts)}
    if as_json:
        echo_json(summary)
        return
    if "counts" in summary:
        click.echo(f"wrote {per_class * len(names)} images to {out} ({', '.join(names)})")
    if video is not None:
        click.echo(f"wrote {video} ({summary['frames']} frames, {video_parts} parts) + ground truth {video}.truth.csv")


@dataset.command("info")
@click.argument("root", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Decode every image and list the unreadable ones.")
@click.option("--hash", "with_hash", is_flag=True, help="Compute the dataset sha256 (as recorded in lineage).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(root: tuple[Path, ...], check: bool, with_hash: bool, as_json: bool) -> None:
    """Classes and image counts of one or more image folders (merged), optionally checked and hashed.
    Exits 1 when the dataset is empty, has a single class, or (with --check) holds unreadable images."""
    folder = run_or_fail(lambda: scan_image_folder(list(root)), as_json)
    doc: dict[str, object] = {
        "ok": True,
        "roots": [str(r) for r in root],
        "counts": folder.counts,
        "images": len(folder),
    }
    bad: list[str] = []
    if check:
        for p in folder.paths:
            try:
                read_image(p)
            except DatasetError as exc:
                bad.append(str(exc))
        doc["unreadable"] = bad
    if with_hash:
        doc["sha256"] = dataset_sha256(folder)
    if bad:
        doc["ok"] = False
    if as_json:
        echo_json(doc)
    else:
        for name, n in folder.counts.items():
            click.echo(f"{name:20s} {n:7d}")
        click.echo(f"{'total':20s} {len(folder):7d}")
        if with_hash:
            click.echo(f"sha256 {doc['sha256']}")
        for line in bad:
            click.echo(f"unreadable: {line}", err=True)
    if bad:
        raise SystemExit(1)
