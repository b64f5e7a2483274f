"""The sections of the demo report, each rendered from its part of the summary dict (the same dict
``edgeline demo --json`` prints). A part that is missing (a stage failed early) renders as a short
note, never as a broken figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeline.demo.report import plots
from edgeline.demo.report.widgets import Raw, card, esc, figure, pct, status, table

MARK_LABELS = {
    "drift_start": "lighting starts to dim",
    "drift_detected": "drift alarm",
    "v2_rollout": "v2 canary",
    "tampered": "tampered update",
}


def _section(key: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{key}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def _missing(what: str) -> str:
    return f'<p class="note">No {esc(what)}: the run stopped before this part of the story.</p>'


def cards(s: dict[str, Any]) -> str:
    models = s.get("models", {})
    v1, v2 = models.get("v1", {}), models.get("v2", {})
    drift = s.get("drift", {})
    alarms = [d for d, v in drift.get("devices", {}).items() if v.get("alarm")]
    tampered = s.get("tampered", {})
    fleet = s.get("fleet", [])
    latest: dict[str, Any] = max(models.values(), key=lambda m: int(m.get("version", 0)), default={})
    on_latest = sum(1 for d in fleet if latest and d.get("model_version") == latest.get("version"))
    nk = s.get("new_kind", {})
    v2_new = nk.get("offline", {}).get("v2", {})
    return (
        '<div class="cards">'
        + card(
            "v1 on the darkened line",
            pct(v1.get("accuracy_drifted")),
            f"normal lighting: {pct(v1.get('accuracy_clean'))}",
        )
        + card(
            "v2 on the darkened line",
            pct(v2.get("accuracy_drifted")),
            f"normal lighting: {pct(v2.get('accuracy_clean'))}",
        )
        + card("drift alarm on", ", ".join(alarms) or "none", f"{len(drift.get('devices', {}))} lines watched")
        + card(
            f"v3 on a new defect kind ({nk.get('kind', '-')})",
            pct(nk.get("live", {}).get("caught")),
            f"rejected or sent to review on {nk.get('line', '-')}; v2 would catch {pct(v2_new.get('caught'))}",
        )
        + card(
            "tampered update",
            "refused" if tampered.get("rejected") else ("not pushed" if not tampered else "NOT refused"),
            str(tampered.get("reason", "")),
        )
        + card(
            f"devices on v{latest.get('version', '?')}",
            f"{on_latest}/{len(fleet)}",
            f"{s.get('duration_s', 0):.0f} s end to end",
        )
        + "</div>"
    )


def stages(s: dict[str, Any]) -> str:
    rows = []
    for st in s.get("stages", []):
        state = st.get("status") or ("passed" if st.get("ok") else "failed")
        mark = status(st.get("ok")) if state != "skipped" else Raw('<span class="muted">skipped</span>')
        rows.append(
            [st.get("title", st.get("name")), mark, f"{float(st.get('seconds', 0)):.1f}", st.get("summary", "")]
        )
    lead = (
        "Every stage ran against real parts: an MQTT broker, one agent process per line running ONNX Runtime on "
        "an HTTP camera stream, a SQLite registry, the telemetry ingest."
    )
    return _section(
        "stages", "The story, stage by stage", lead, table(["stage", "outcome", "s", "what happened"], rows, (2,))
    )


def _confusions(models: dict[str, Any], drifted_line: str) -> str:
    panels, notes = [], []
    for cond in ("clean", "drifted"):
        for key in ("v1", "v2"):
            m = models.get(key, {})
            cm = m.get(f"confusion_{cond}")
            if not cm:
                continue
            where = "normal lighting" if cond == "clean" else f"darkened {drifted_line}"
            panels.append((f"{key} · {where}", cm["labels"], cm["matrix"]))
            notes.append(f"{key} on {where}: {pct(m.get(f'accuracy_{cond}'))} of {int(cm.get('frames', 0)):,} frames")
    if not panels:
        return _missing("scored verdicts")
    return figure(plots.confusions(panels), "; ".join(notes) + ". Rows: the true class; columns: the verdict.")


def _retraining(s: dict[str, Any]) -> str:
    st = next((x for x in s.get("stages", []) if x.get("name") == "retrain" and x.get("ok")), None)
    if st is None:
        return ""
    d = st.get("details", {})
    est, act, gate = d.get("estimated_lighting", {}), d.get("actual_lighting", {}), d.get("gate", {})
    ev = d.get("evidence", {})
    light = f"brightness <b>{float(est.get('brightness', 0)):+.0f}</b> grey levels, contrast "
    light += f"<b>x{float(est.get('contrast', 1)):.2f}</b>"
    actual = f"{float(act.get('brightness', 0)):+.0f}, x{float(act.get('contrast', 1)):.2f}"
    return (
        f'<p class="facts"><b>Retraining.</b> From {esc(ev.get("windows", "?"))} drifted telemetry windows '
        f"({esc(ev.get('frames', '?'))} frames) the field's lighting was measured as {light} "
        f"(the camera simulator applied {actual}). v2 was trained on the same labelled images plus copies under "
        f"that lighting. Gate on held-out images under the measured lighting: v1 {pct(gate.get('v1_field'))} → "
        f"v2 {pct(gate.get('v2_field'))}; on normal images v1 {pct(gate.get('v1_clean'))} → "
        f"v2 {pct(gate.get('v2_clean'))}.</p>"
    )


def models(s: dict[str, Any]) -> str:
    ms = s.get("models", {})
    if not ms:
        return _section("models", "Models", "", _missing("models"))
    rows = [
        [
            key,
            m.get("version", ""),
            m.get("quantization", ""),
            f"{int(m.get('size_bytes', 0)):,}",
            pct(m.get("accuracy_holdout")) if m.get("model_kind") is None else _line_terms(m),
            pct(m.get("accuracy_clean")),
            pct(m.get("accuracy_drifted")),
            m.get("lineage", ""),
        ]
        for key, m in sorted(ms.items())
    ]
    lead = (
        "Accuracy on the line is scored from the devices' own verdicts (the line's local log) against the camera "
        "simulator's ground truth for every frame it served. Held-out accuracy is the build pipeline's."
    )
    head = ["model", "version", "int8 mode", "bytes", "held-out", "normal lighting", "darkened line", "lineage"]
    lead += (
        " v3 is an inspection model: its held-out figures are the line's, false reject and escape (out of fold), "
        "and its verdicts are judged in the new defect kind's section."
    )
    body = table(head, rows, (3, 4, 5, 6)) + _retraining(s) + _confusions(ms, s.get("drift", {}).get("line", "line"))
    return _section("models", "Models", lead, body)


def _rate_text(r: Any) -> str:
    if not isinstance(r, dict) or r.get("n") is None:
        return "-"
    value = pct(r.get("value"))
    return f"{value} ({r.get('events', '?')}/{r.get('n')}, 95% CI {pct(r.get('low'))}-{pct(r.get('high'))})"


def _line_terms(m: dict[str, Any]) -> str:
    fr, escape = m.get("false_reject") or {}, m.get("escape") or {}
    return f"false reject {pct(fr.get('value'))}, escape {pct(escape.get('value'))}"


def new_kind(s: dict[str, Any]) -> str:
    nk = s.get("new_kind", {})
    title = "A new defect kind"
    if not nk:
        return _section("new_kind", title, "", _missing("new defect kind"))
    kind, line = nk.get("kind", "?"), nk.get("line", "?")
    v3 = nk.get("v3", {})
    build = v3.get("build", {})
    live, good, known = nk.get("live", {}), nk.get("good_parts", {}), nk.get("known_defects", {})
    offline = nk.get("offline", {})
    v2o, v3o = offline.get("v2", {}), offline.get("v3", {})
    targets = build.get("targets", {})
    box = (
        f'<p class="facts"><b>v3</b> is an inspection model ({esc(v3.get("model_kind", "?"))}: a good-part model '
        "plus a classifier for the defect kinds of the training images, joined as a noisy OR), built from v1's "
        f"training images in {esc(build.get('folds', '?'))}-fold cross-validation, in the background from "
        f"stage 1 on ({esc(build.get('seconds', '?'))} s). Its build report, out of fold: "
        f"<b>false reject {esc(_rate_text(build.get('false_reject')))}</b>, "
        f"<b>escape {esc(_rate_text(build.get('escape')))}</b>, against the line's targets of "
        f"{pct(targets.get('max_false_reject'))} and {pct(targets.get('max_escape'))}.</p>"
        f'<p class="facts">Then <b>{esc(line)}</b> showed <b>{esc(kind)}</b> parts ({pct(nk.get("share_shown"))} '
        f"of its parts for {esc(nk.get('seconds_shown', '?'))} s), a kind no training image shows. "
        f"<b>v3 rejected or sent to review {pct(live.get('caught'))}</b> of the {esc(live.get('frames', 0))} "
        f"it inspected there (rejected {pct(live.get('rejected'))}); v2, the classifier, run offline on "
        f"{esc(v2o.get('frames', 0))} rendered {esc(kind)} parts through the agents' own code path, would have "
        f"caught {pct(v2o.get('caught'))}. Rule: {esc(nk.get('rule', ''))}.</p>"
    )
    rows = [
        [f"v3 on {line}, live: {kind} parts", live.get("frames", 0), pct(live.get("rejected")),
         pct(_share(live, "review")), pct(live.get("caught")), _labels(live)],
        [f"v3 offline: {kind} parts", v3o.get("frames", 0), pct(v3o.get("rejected")), pct(_share(v3o, "review")),
         pct(v3o.get("caught")), _labels(v3o)],
        [f"v2 offline: {kind} parts", v2o.get("frames", 0), pct(v2o.get("rejected")), pct(_share(v2o, "review")),
         pct(v2o.get("caught")), _labels(v2o)],
        [f"v3 on {line}, live: good parts", good.get("frames", 0), pct(good.get("rejected")),
         pct(_share(good, "review")), pct(good.get("caught")), _labels(good)],
        [f"v3 on {line}, live: known defect kinds", known.get("frames", 0), pct(known.get("rejected")),
         pct(_share(known, "review")), pct(known.get("caught")), _labels(known)],
    ]  # fmt: skip
    head = ["who, on what", "parts", "rejected", "review", "rejected or review", "labels (defect, unknown)"]
    body = box + table(head, rows, (1, 2, 3, 4))
    by_line = nk.get("good_parts_by_line", {})
    if by_line:
        fleet_text = "; ".join(
            f"{esc(d)} ({esc(g.get('lighting', '?'))} lighting) {pct(g.get('rejected'))} rejected, "
            f"{pct(_share(g, 'review'))} to review, of {esc(g.get('frames', 0))}"
            for d, g in sorted(by_line.items())
        )
        body += (
            '<p class="facts"><b>Good parts under v3, every line</b> (live, until the end of the stage): '
            f"{fleet_text}.</p>"
        )
    bars = [(r[0], src) for r, src in zip(rows, (live, v3o, v2o, good, known), strict=True) if src.get("frames")]
    if bars:
        body += figure(
            plots.routing_bars(bars),
            f"Where each model sends the parts: the reject chute, review (unknown or uncertain verdicts) or on down "
            f"the line. The live rows are the devices' own verdicts on {line}, scored against the camera's ground "
            "truth; the offline rows are the same rendered parts for both models.",
        )
    lead = (
        "A defect kind no model saw in training: the classifier can only name the kinds it knows, while the "
        "good-part model of an inspection model objects to anything unlike a good part."
    )
    return _section("new_kind", title, lead, body)


def _share(r: dict[str, Any], key: str) -> float | None:
    n = r.get("frames") or 0
    return int(r.get(key, 0)) / n if n else None


def _labels(r: dict[str, Any]) -> str:
    labels = r.get("labels") or {}
    return ", ".join(f"{k} {v}" for k, v in labels.items()) or "-"


def drift(s: dict[str, Any]) -> str:
    d = s.get("drift", {})
    devices = d.get("devices", {})
    if not devices:
        return _section("drift", "Drift", "", _missing("telemetry"))
    line = d.get("line", "")
    rows, series = [], {}
    for dev, v in sorted(devices.items()):
        pts = v.get("series", [])
        if pts:
            series[dev] = ([p["t"] for p in pts], [p["score"] for p in pts])
        rows.append(
            [
                dev,
                "darkened" if v.get("drifted") else "normal",
                v.get("windows", 0),
                f"{float(v.get('max_score', 0)):.2f}",
                _alarm(v.get("local_alarm_s")),
                _alarm(v.get("first_alarm_s") if v.get("alarm") else None),
            ]
        )
    marks = {MARK_LABELS[k]: float(t) for k, t in s.get("marks", {}).items() if k in MARK_LABELS}
    head = ["line", "lighting", "windows", "max score", "alarm on the device (offline)", "alarm in the cloud"]
    body = table(head, rows, (2, 3))
    if series:
        body += figure(
            plots.drift_over_time(series, d.get("threshold"), marks, highlight=line),
            "Each point is one telemetry window. The score stays high on the darkened line after v2: its images are "
            "still darker than the training images (v2 handles them, the input drift is real).",
        )
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    edges: dict[str, list[float]] = {}
    for dev, v in devices.items():
        for stat, h in v.get("hist", {}).items():
            panels.setdefault(stat, {})[dev] = (h["reference"], h["field"])
            edges[stat] = h["edges"]
    for stat, per_line in sorted(panels.items()):
        body += figure(
            plots.histogram_panels(stat, edges[stat], per_line, line),
            f"{stat} of the inspected region: v1's training reference against the telemetry of each line "
            "since the lighting changed",
        )
    lead = (
        "Only aggregates leave the devices: per window, class counts and histograms of input statistics. The score "
        "is the largest population stability index over the input statistics, divided by its threshold calibrated "
        f"for the window's size; an alarm needs {esc(d.get('rule', 'sustained drift'))}. The device raises its own "
        "alarm to the line from the same windows, without the cloud."
    )
    return _section("drift", "Drift", lead, body)


def _alarm(at: Any) -> Raw:
    if at is None:
        return Raw('<span class="ok">quiet</span>')
    return Raw(f'<span class="bad">alarm</span> at {float(at):.0f} s')


def _waves(waves: Sequence[Sequence[str]]) -> str:
    return " → ".join(", ".join(w) for w in waves)


def rollouts(s: dict[str, Any]) -> str:
    rs = s.get("rollouts", [])
    rows = [
        [
            r.get("version", ""),
            _waves(r.get("waves", [])),
            r.get("state", ""),
            f"{float(r.get('started', 0)):.0f}",
            f"{float(r.get('seconds', 0)):.1f}",
            r.get("id", ""),
        ]
        for r in rs
    ]
    body = table(["version", "waves (canary first)", "outcome", "started at s", "took s", "rollout"], rows, (3, 4))
    devices = [d["device"] for d in s.get("fleet", [])] or sorted({e["device"] for e in s.get("timeline", [])})
    events = s.get("timeline", [])
    if events and devices:
        body += figure(
            plots.timeline(events, devices),
            "Updater events each device published: download, verify, stage, activate (trial on live frames), "
            "commit; and the refusal of the tampered update.",
        )
    return _section("rollouts", "Rollouts", "", body if rs else _missing("rollouts"))


def fleet(s: dict[str, Any]) -> str:
    rows = [
        [
            d.get("device"),
            Raw('<span class="ok">online</span>' if d.get("online") else '<span class="bad">offline</span>'),
            d.get("model_version", "") or "-",
            d.get("slot", ""),
            d.get("last_event", ""),
            f"{int(d.get('inspected', d.get('frames', 0))):,}",
            f"{int(d.get('defects', 0)):,}",
            d.get("last_error", "") or "-",
        ]
        for d in s.get("fleet", [])
    ]
    head = ["device", "status", "model", "slot", "last event", "inspected", "defects", "last error"]
    lead = "The fleet view just before shutdown: retained device states and the last event of each device."
    return _section("fleet", "Fleet", lead, table(head, rows, (5, 6)) if rows else _missing("fleet view"))


def tampered(s: dict[str, Any]) -> str:
    t = s.get("tampered", {})
    if not t:
        return _section("tampered", "The tampered update", "", _missing("tampered update"))
    verdict = "refused by every device" if t.get("rejected") else "NOT refused by every device: this is a failure"
    running = t.get("running_after", {})
    frames = t.get("frames_by_device", {})
    reasons = t.get("reasons", {})
    rows = [
        [d, reasons.get(d, "no answer"), f"{int(frames.get(d, 0)):,}", running.get(d, "?")]
        for d in t.get("devices", [])
    ]
    box = (
        f'<div class="reject"><b>{esc(t.get("description", "a manifest altered after signing"))}</b> — {esc(verdict)}.'
        f"<br>reason: <code>{esc(t.get('reason', ''))}</code> · deployment sequence {esc(t.get('sequence', '?'))} · "
        f"the refused manifest: <code>{esc(t.get('manifest', ''))}</code></div>"
    )
    body = box + table(["device", "answer", "frames inspected meanwhile", "model afterwards"], rows, (2,))
    return _section("tampered", "The tampered update", "", body)
