"""The shadow block under Laplace noise: its cells are in the window's sensitivity (measured by adding
one compared frame), the device sends them noised but signed with the scale on the wire, the wire
refuses hostile values, and the cloud's sums over many windows are unbiased where the old clipped
pipeline was far off; the report and the promotion policy on noised windows."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud_registry.telemetry.shadow_policy import PromotionPolicy, judge
from cloud_registry.telemetry.shadow_report import Evidence, build_report
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import SigningKey
from edge_agent.outbox.store import Outbox
from edge_agent.plugins import FrameResult
from edge_agent.preprocessing import STAT_RANGES
from edge_agent.runtime import Agent, AgentState
from edge_agent.shadow.window import OTHER, SHADOW_SENSITIVITY, ShadowCounts
from edge_agent.sources import MemoryCapture
from edge_agent.telemetry.drift import Calibrator
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.telemetry.privacy import FRAME_SENSITIVITY, LaplaceNoise
from edge_agent.telemetry.windows import DriftContext, ModelKey, RawWindow, build_window
from edge_agent.verdict import Verdict
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.field_window import NOISE_TAIL
from edgeline.core.protocol.manifest import Reference
from edgeline.core.protocol.shadow_window import VERDICTS, ShadowWindow
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.agent.helpers import make_config, wait_for
from tests.factories import tiny_frames, tiny_model, write_tiny_bundle
from tests.telemetry.conftest import SECRET
from tests.telemetry.test_shadow_windows import window_with

CHAMPION = ModelKey("tiny", 1, "c" * 64)
CHALLENGER = ModelKey("tiny", 2, "a" * 64)
CTX = DriftContext(Reference(), ("good", "scratch", "dent"))  # the labels; no drift reference
#: one window's true comparison: 30 agreed ok, 8 agreed defect, 2 ok -> defect (good -> scratch)
FRAMES = [(("ok", "good"), ("ok", "good"))] * 30
FRAMES += [(("defect", "scratch"), ("defect", "scratch"))] * 8 + [(("ok", "good"), ("defect", "scratch"))] * 2
WINDOWS = 2000
EPSILON = 4.0


def _flat(c: ShadowCounts) -> dict[str, int]:
    """Every count the block keeps, by name (from its persisted state: nothing is left out)."""
    out: dict[str, int] = {}
    for name, v in c.to_state().items():
        if name == "challenger":
            continue
        if isinstance(v, int):
            out[name] = v
        elif name == "pairs":
            out |= {f"pairs.{a}.{b}": n for a, b, n in v}
        elif isinstance(v, dict):
            out |= {f"{name}.{k}": int(n) for k, n in v.items()}
        else:
            out |= {f"{name}.{i}": int(n) for i, n in enumerate(np.asarray(v).ravel())}
    return out


def _l1(a: dict[str, int], b: dict[str, int], keep: Callable[[str], bool]) -> int:
    return sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b) if keep(k))


def _counts(frames: list[tuple[tuple[str, str], tuple[str, str]]] = FRAMES) -> ShadowCounts:
    c = ShadowCounts(challenger=CHALLENGER, skipped=5, errors=1, ctx=CTX)
    rng = np.random.default_rng(0)
    for champion, challenger in frames:
        c.add(champion, challenger, float(rng.uniform(0.6, 1.0)), float(rng.normal()), 0.8)
    return c


def test_the_sensitivity_counts_every_noised_cell_one_compared_frame_adds() -> None:
    before = _counts()

    def noised(k: str) -> bool:
        return not k.startswith("latency.")  # the latency is not noised (docs/privacy.md)

    worst = 0
    # every way the worker can record one frame: compared (labels alike or not, with or without an
    # anomaly score), skipped, refused
    for kind in ("differ", "alike", "no_anomaly", "skipped", "error"):
        after = _counts()
        if kind == "skipped":
            after.skipped += 1
        elif kind == "error":
            after.errors += 1
        else:
            label = "scratch" if kind == "differ" else "good"
            logit = None if kind == "no_anomaly" else 0.3
            after.add(("ok", "good"), ("defect", label), 0.7, logit, 0.9)
        worst = max(worst, _l1(_flat(before), _flat(after), noised))
    assert worst == SHADOW_SENSITIVITY
    # the noise touches exactly those cells (each of them, zeros included) and never the latency
    plus = before.noised(lambda v: v + 1000, 1.0, ("good", "scratch"))
    a, b = _flat(before), _flat(plus)
    assert all(b[k] - a.get(k, 0) == 1000 for k in b if noised(k)) and all(b[k] == a[k] for k in a if not noised(k))
    assert {k for k in a if noised(k)} <= set(b)
    # the window's own cells: one frame added to a raw window, as the inspection loop adds it
    raw = RawWindow(CHAMPION, 0.0, 1.0, class_counts={"good": 3, "scratch": 1})
    one = RawWindow(CHAMPION, 0.0, 1.0, class_counts={"good": 3, "scratch": 1})
    one.add(_frame())
    # + the two feedback cells the part's feedback can change (the truth given, the one it replaced)
    window_delta = _l1(_window_counts(raw), _window_counts(one), lambda k: True) + 2
    assert window_delta == FRAME_SENSITIVITY
    # the window's scale is the sum over its blocks: a window without a shadow block keeps its scale
    noise = LaplaceNoise(EPSILON, contribution=3)
    assert noise.scale_for(raw) == noise.scale == FRAME_SENSITIVITY * 3 / EPSILON
    raw.shadow = before
    assert noise.scale_for(raw) == pytest.approx((window_delta + worst) * 3 / EPSILON)


def _frame() -> FrameResult:
    v = Verdict(7, "defect", "scratch", 0.83, False, "tiny", 1, 1.2, 0.0)
    stats = dict.fromkeys(STAT_RANGES, 0.5)
    return FrameResult(v, np.array([0.17, 0.83]), stats, CHAMPION.sha256, anomaly_logit=1.5)


def _window_counts(w: RawWindow) -> dict[str, int]:
    out = {"frames": w.frames, "stats_frames": w.stats_frames, "errors": w.errors, "drops": w.drops}
    out |= {f"class.{k}": n for k, n in w.class_counts.items()}
    for name, h in [("confidence", w.confidence), ("anomaly", w.anomaly)] + [
        (f"stat.{n}", s) for n, s in w.stats.items()
    ]:
        out |= {f"{name}.{i}": int(x) for i, x in enumerate(h)}
    fm = w.field_metrics
    for name, h in (("score_pass", fm.score_pass), ("score_reject", fm.score_reject)):
        out |= {f"{name}.{i}": int(x) for i, x in enumerate(h)}
    return out


def _released(noise: LaplaceNoise, counts: ShadowCounts) -> TelemetryWindow:
    """One window as the plugin releases it: noised, built, encoded and parsed as the ingest does."""
    raw = RawWindow(CHAMPION, 0.0, 60.0, frames=46, class_counts={"good": 36, "scratch": 10}, shadow=counts)
    released = noise.apply(raw)
    w = build_window(
        released,
        key=uuid.uuid4().hex,
        device="d" * 32,
        group="line-p",
        ctx=None,
        calibrator=CALIBRATOR,
        noise_epsilon=noise.epsilon,
        noise_scale=noise.scale_for(raw),
    )
    return parse_window(w.encode())


CALIBRATOR = Calibrator()


def test_the_device_sends_signed_counts_with_the_scale_of_the_window() -> None:
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(5))
    w = _released(noise, _counts())
    s = w.shadow
    assert s is not None and w.field_metrics is not None
    b = (FRAME_SENSITIVITY + SHADOW_SENSITIVITY) / EPSILON
    assert s.noise_scale == pytest.approx(b) and w.field_metrics.noise_scale == pytest.approx(b)
    assert min(n for _, n in s.counts()) < 0  # signed, not clipped
    assert min(w.confidence) >= 0 and w.frames >= 0  # the window's own counts stay clipped
    # the pairs: every pair of the two models' labels, noised, zeros included
    pairs = {(a, c) for a, row in s.disagreement.items() for c in row}
    assert pairs == {("good", "scratch"), ("good", "dent"), ("scratch", "good"), ("scratch", "dent"), (OTHER, OTHER)}
    exact = _counts().to_wire(CALIBRATOR)
    assert exact is not None and exact.noise_scale is None and exact.disagreement == {"good": {"scratch": 2}}
    # without a label domain (the challenger's manifest unknown) a noised block carries no pairs
    blind = _counts()
    blind.ctx = None
    assert blind.noised(noise.signed, noise.scale, ("good", "scratch")).pairs == {}


def test_the_sum_of_many_noisy_windows_is_unbiased_and_the_clipped_sum_is_not() -> None:
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(20261204))
    counts = _counts()
    signed, clipped = Evidence(), Evidence()
    for _ in range(WINDOWS):
        s = _released(noise, counts).shadow
        assert s is not None
        signed.add(s, 1)
        # before: every count rounded and clipped at 0, no scale on the wire
        old = counts.noised(noise._noisy).to_wire(CALIBRATOR)
        assert old is not None
        clipped.add(ShadowWindow.model_validate(old.model_dump()), 1)
    b = (FRAME_SENSITIVITY + SHADOW_SENSITIVITY) / EPSILON
    sd = math.sqrt(WINDOWS * 2 * b**2)  # of one cell's sum
    sd_old = math.sqrt(WINDOWS * 2 * noise.scale**2)  # the old pipeline noised at the scale without the block
    truth = counts.agreement * WINDOWS
    zeros = 0
    for i, a in enumerate(VERDICTS):
        for j, c in enumerate(VERDICTS):
            assert abs(signed.agreement[a][c] - truth[i, j]) < 4 * sd, (a, c)
            if truth[i, j] == 0:
                # clipped at 0, a cell that is 0 comes out ~b/2 per window too high: > 10 sd in all
                assert clipped.agreement[a][c] - truth[i, j] > 10 * sd_old, (a, c)
                zeros += 1
    assert zeros == 6
    assert abs(signed.compared - 40 * WINDOWS) < 4 * sd and abs(signed.skipped - 5 * WINDOWS) < 4 * sd
    assert abs(signed.disagreement[("good", "scratch")] - 2 * WINDOWS) < 4 * sd
    assert abs(signed.disagreement[("scratch", "dent")]) < 4 * sd
    assert clipped.disagreement == {}  # the old pipeline withheld nothing but counted pairs as they came
    # the agreement: 38/40 in truth, within the stated noise; the clipped sums made it 100%
    rate = signed.agreement_rate
    assert rate is not None and signed.agreement_low is not None and signed.agreement_high is not None
    assert signed.agreement_noise_sd == pytest.approx(
        math.sqrt(WINDOWS * 3 * 2 * b**2 + rate**2 * WINDOWS * 2 * b**2) / signed.compared
    )
    assert abs(rate - 0.95) < 3 * signed.agreement_noise_sd and signed.agreement_low < 0.95 < signed.agreement_high
    old_rate, old_sd = clipped.agreement_rate, math.sqrt(WINDOWS * 8 * noise.scale**2) / clipped.compared
    assert old_rate is not None and old_rate - 0.95 > 6 * old_sd  # measured: 0.989, ~8 sd off
    assert clipped.agreement_noise_sd == 0.0  # and it did not know it was noised
    assert signed.noised_windows == WINDOWS and clipped.noised_windows == 0


def _body(**shadow: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "challenger": {"name": "tiny", "version": 2, "sha256": "a" * 64},
        "compared": 40,
        "agreement": {a: {b: (40 if a == b == "ok" else 0) for b in VERDICTS} for a in VERDICTS},
        "confidence": [0] * 9 + [40],
    }
    block.update(shadow)
    return window_with(block)


def _matrix(a: str, b: str, n: float) -> dict[str, dict[str, float]]:
    m: dict[str, dict[str, float]] = {x: dict.fromkeys(VERDICTS, 0) for x in VERDICTS}
    m[a][b] = n
    return m


def test_the_wire_takes_signed_counts_within_bounds_and_refuses_hostile_ones() -> None:
    low = -NOISE_TAIL * 3
    ok = parse_window(_body(noise_scale=3.0, compared=low, agreement=_matrix("unknown", "ok", low)))
    assert ok.shadow is not None and min(n for _, n in ok.shadow.counts()) == low
    cases = {
        r"shadow\.compared = -1 is negative without noise_scale": _body(compared=-1),
        r"shadow\.agreement\.ok\.defect = -2 is negative without noise_scale": _body(
            agreement=_matrix("ok", "defect", -2)
        ),
        r"shadow\.disagreement\.ok\.spot = -1 is negative without": _body(disagreement={"ok": {"spot": -1}}),
        r"shadow\.confidence\.0 = -1 is negative without": _body(confidence=[-1] + [0] * 9),
        r"shadow\.skipped = -121 is negative below -40 x noise_scale": _body(noise_scale=3.0, skipped=-121),
        "less than or equal to 1000000000": _body(noise_scale=3.0, compared=10**12),
        "greater than or equal to -1000000000": _body(noise_scale=1e7, errors=-(10**12)),
        "integer": _body(noise_scale=3.0, agreement=_matrix("ok", "ok", 39.5)),
        "shadow.noise_scale": _body(noise_scale=0.0),
        r"shadow\.noise_scale.*less than or equal to 10000000": _body(noise_scale=1e8),
    }
    for why, body in cases.items():
        with pytest.raises(ProtocolError, match=why):
            parse_window(body)
        with pytest.raises(ProtocolError):
            parse_window(json.dumps(body).encode())  # the fast bytes path refuses them too
    for spelled in ('"noise_scale": NaN', '"noise_scale": Infinity', '"compared": NaN'):
        raw = json.dumps(_body(noise_scale=3.0)).replace('"noise_scale": 3.0', spelled)
        with pytest.raises(ProtocolError):
            parse_window(raw.encode())
    with pytest.raises(ValueError, match="noise_scale"):
        ShadowWindow.model_validate(_body(noise_scale=float("nan"))["shadow"])


def _line_windows(
    noise: LaplaceNoise, line: str, agree: float, n: int = 400, windows: int = 20
) -> list[TelemetryWindow]:
    counts = _counts(_frames(agree, n))
    out = []
    for i in range(windows):
        w = _released(noise, counts)
        t = 1.7e9 + 60 * i
        out.append(w.model_copy(update={"device": line, "key": uuid.uuid4().hex, "start": t, "end": t + 60}))
    return out


def _frames(agree: float, n: int) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    same = round(n * agree)
    return [(("ok", "good"), ("ok", "good"))] * same + [(("ok", "good"), ("defect", "scratch"))] * (n - same)


def test_report_and_promotion_on_noised_windows(tmp_path: Path) -> None:
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(11))
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    lines = {a: 0.99, b: 0.96, c: 0.90}
    store = TelemetryStore(tmp_path / "t.db")
    for line, agree in lines.items():
        for w in _line_windows(noise, line, agree):
            store.add(w)
    windows = [sw.window for sw in store.windows("tiny")]
    store.close()
    assert len(windows) == 60 and all(w.shadow is not None and w.shadow.noise_scale for w in windows)
    rep = build_report(windows, "tiny", 2)
    for line, agree in lines.items():
        ev = rep.lines[line]
        assert ev.noised_windows == 20 and ev.agreement_rate is not None
        assert abs(ev.agreement_rate - agree) < 3 * ev.agreement_noise_sd
        # sqrt(20 x (3 + p**2) x 2 x 4.5**2) / 8,000 = 0.0071
        assert ev.agreement_noise_sd == pytest.approx(0.0071, abs=0.0003)
    d = judge(rep, PromotionPolicy(min_frames=7000, min_agreement=0.95, min_lines=3))
    assert not d.accepted and a not in d.failing_lines and c in d.failing_lines
    ev_c = rep.lines[c]
    assert ev_c.agreement_rate is not None and ev_c.agreement_low is not None
    noted = f"noise sd {100 * ev_c.agreement_noise_sd:.2f} pp, lower bound {ev_c.agreement_low:.1%}"
    assert d.failing_lines[c] == [f"agreement {ev_c.agreement_rate:.1%} (noised: {noted}) < 95.0%"]
    # a limit between b's lower bound under the noise and its rate: the point estimate would pass,
    # the policy does not promote on noise; the same comparison without noise passes the same limit
    ev_b = rep.lines[b]
    assert ev_b.agreement_rate is not None and ev_b.agreement_low is not None
    limit = ev_b.agreement_rate - ev_b.agreement_noise_sd
    (why,) = judge(rep, PromotionPolicy(min_frames=7000, min_agreement=limit)).failing_lines[b]
    assert "noised: noise sd" in why and why.endswith(f"< {limit:.1%}")
    assert ev_b.agreement_low < limit < ev_b.agreement_rate
    exact = [w.model_copy(update={"shadow": _exact_block(0.96)}) for w in windows if w.device == b]
    exact_limit = min(limit, 0.96)
    assert judge(build_report(exact, "tiny", 2), PromotionPolicy(min_frames=7000, min_agreement=exact_limit)).accepted
    assert "lower 95% bound under the noise" in d.policy.describe()
    assert judge(rep, PromotionPolicy(min_frames=7000, min_agreement=0.85, min_lines=3)).accepted
    assert not judge(rep, PromotionPolicy(min_frames=9000, min_agreement=0.85)).accepted  # 8,000 compared a line
    body = rep.to_dict()["lines"][a]
    assert body["noised_windows"] == 20 and body["agreement_low"] < body["agreement_rate"] < body["agreement_high"]
    assert body["disagreement"] and all(p["frames"] > 0 for p in rep.to_dict()["total"]["disagreement"])
    # the table of `edgeline shadow report` prints the range beside the rate when the windows were noised
    from edgeline.cli.shadow import _agree

    assert _agree(ev_c) == f"{ev_c.agreement_rate:.1%} ({ev_c.agreement_low:.1%}-{ev_c.agreement_high:.1%}, noised)"
    assert _agree(build_report(exact, "tiny", 2).total()) == "96.0%"


def _exact_block(agree: float) -> ShadowWindow:
    """The block of a window of 400 frames compared without noise."""
    s = _counts(_frames(agree, 400)).to_wire(CALIBRATOR)
    assert s is not None and s.noise_scale is None
    return s


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    """A challenger that says defect where the champion says ok and the other way round."""
    return write_tiny_bundle(
        tmp_path_factory.mktemp("flip") / "tiny-v2", signing_key, version=2, model=tiny_model(flip=True)
    )


def test_a_real_agent_with_a_challenger_noises_its_windows_at_the_scale_of_both_blocks(
    tmp_path: Path, tiny_bundle: Path, flipped: Path, key_dir: Path
) -> None:
    frames, _ = tiny_frames(40, seed=8)
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(tmp_path), "loop": False},
        model={"bundle": str(tiny_bundle), "trust_file": str(key_dir / "trust.json")},
        shadow={
            "enabled": True,
            "bundle": str(flipped),
            "max_fps": 1000,
            "max_duty": 1.0,
            "yield_when_behind": False,
            "idle_class": False,
        },
    )
    ob = Outbox(tmp_path / "outbox.db")
    section = TelemetrySection(window_frames=50, window_s=3600, min_frames=20, tick_s=0.05, epsilon=EPSILON)
    plugin = TelemetryPlugin(section, outbox=ob, secret=SECRET, topics=Topics(), link=None)
    agent = Agent(cfg, plugins=[plugin], capture=MemoryCapture((frames * 10)[:400], "belt"))
    agent.start()
    assert wait_for(lambda: agent.state in (AgentState.STOPPED, AgentState.FAILED), 60.0)
    agent.wait(10.0)
    windows = [parse_window(m.payload) for m in ob.peek(100)]
    both = (FRAME_SENSITIVITY + SHADOW_SENSITIVITY) / EPSILON
    with_block = [w for w in windows if w.shadow is not None]
    assert with_block and all(w.noise_epsilon == EPSILON for w in windows)
    for w in windows:
        assert w.field_metrics is not None
        want = both if w.shadow is not None else FRAME_SENSITIVITY / EPSILON
        assert w.field_metrics.noise_scale == pytest.approx(want)
        if w.shadow is not None:
            assert w.shadow.noise_scale == pytest.approx(both)
    # signed on the wire; the sum of the blocks' frames compared is the challenger's own count, within the noise
    assert min(n for w in with_block for _, n in w.shadow.counts()) < 0  # type: ignore[union-attr]
    ev = build_report(windows, "tiny", 2).total()
    assert ev.noised_windows == len(with_block)
    compared = agent.counters()["shadow"]["compared"]
    assert abs(ev.compared - compared) < 4 * math.sqrt(ev.compared_var) + 1
