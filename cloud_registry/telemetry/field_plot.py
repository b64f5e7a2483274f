"""The field report as a PNG: per version, the measured field escape and false-reject rates of every
row (95% interval as a bar) beside the estimate without labels (a cross), with the configured limits."""

from __future__ import annotations

from pathlib import Path

from cloud_registry.telemetry.field_report import FieldReport


def render_field_png(report: FieldReport, path: Path, *, scopes: tuple[str, ...] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if not scopes or r.scope in scopes]
    labels = [f"v{r.version} {r.scope}={r.value}" if r.scope != "version" else f"v{r.version}" for r in rows]
    height = max(2.5, 0.35 * len(rows) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(12, height), squeeze=False, sharey=True)
    limits = (report.settings.escape_limit, report.settings.false_reject_limit)
    for ax, name, limit in zip(axes[0], ("escape", "false_reject"), limits, strict=True):
        for i, r in enumerate(rows):
            rate = r.escape if name == "escape" else r.false_reject
            if rate.n:
                colour = "tab:blue" if rate.status == "measured" else "tab:gray"
                ax.plot([100 * rate.low, 100 * rate.high], [i, i], color=colour, lw=4, alpha=0.6)
                ax.plot([100 * (rate.value or 0.0)], [i], "o", color=colour)
            est = None if r.estimate is None else getattr(r.estimate, name)
            if est is not None:
                ax.plot([100 * est], [i], "x", color="tab:orange", ms=8)
        if limit is not None:
            ax.axvline(100 * limit, color="tab:red", ls="--", lw=1)
        ax.set_title(f"field {'escape' if name == 'escape' else 'false reject'} (%): measured (95% CI), x estimated")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"field rates of {report.model} (grey: too little feedback to tell)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
