"""The angle search: turning round parts back by their polar profile, and its manifest checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from converters.inspection_build import INSPECTION_SPEC
from converters.registration_fit import fit_registration
from converters.synth import Conditions, render_part
from edge_agent.angle_search import AngleSearcher, fit_template
from edge_agent.errors import ManifestError
from edge_agent.preprocessing import Preprocessor
from edgeline.core.protocol.manifest import SEARCH_ANGLES, AngleSearch, Registration


def _flanges(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_part("ok", rng, conditions=Conditions(), family="flange") for _ in range(n)]


def _turn(img: np.ndarray, deg: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), deg, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def fitted() -> tuple[Preprocessor, Registration]:
    spec, notes = fit_registration(_flanges(120, 7000), INSPECTION_SPEC, "auto")
    assert spec.registration is not None
    assert "kept:" in notes["angle_search"], notes  # a flange has no axis: only the search turns it back
    return Preprocessor(spec), spec.registration


def test_a_flange_turned_by_a_known_angle_is_turned_back(fitted: tuple[Preprocessor, Registration]) -> None:
    pre, reg = fitted
    assert reg.search is not None and reg.search.range == 180.0
    searcher = AngleSearcher(reg.search)
    for frame in _flanges(6, 7100):
        aligned = pre.prepare(frame)
        for deg in (-100.0, -37.0, 12.0, 75.0):
            found = searcher.angle(_turn(aligned, deg))
            err = (found + deg + 180.0) % 360.0 - 180.0  # turning back by `found` undoes `deg`
            # a flange's bolt circle repeats every 360/6 degrees: any multiple of it is as good
            err = min(abs(err), abs(abs(err) - 60.0), abs(abs(err) - 120.0), abs(abs(err) - 180.0))
            assert err <= 3.0, (deg, found)


def test_aligned_good_flanges_look_alike_after_the_search(fitted: tuple[Preprocessor, Registration]) -> None:
    pre, reg = fitted
    plain = Preprocessor(INSPECTION_SPEC.model_copy(update={"registration": reg.model_copy(update={"search": None})}))
    frames = _flanges(40, 7200)
    spread_turned = np.std(np.stack([pre.prepare(f).astype(np.float32) for f in frames]), axis=0).mean()
    spread_plain = np.std(np.stack([plain.prepare(f).astype(np.float32) for f in frames]), axis=0).mean()
    # measured 0.89 (the rest of the spread is camera noise and surface texture, not the turn)
    assert spread_turned < 0.95 * spread_plain, (spread_turned, spread_plain)


def test_a_hexnut_under_a_fixed_lamp_keeps_translation_only() -> None:
    """Turned back, the hex nut's fixed highlight moves with it: the planted blemishes say no."""
    rng = np.random.default_rng(7300)
    frames = [render_part("ok", rng, conditions=Conditions(), family="hexnut") for _ in range(120)]
    spec, notes = fit_registration(frames, INSPECTION_SPEC, "auto")
    assert spec.registration is not None and spec.registration.search is None
    assert notes["angle_search"].startswith("not kept"), notes


def test_template_fitting_needs_images() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        fit_template([], 180.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": [[0.0] * 12] * (SEARCH_ANGLES - 1)}, "rows"),
        ({"template": [[0.0] * 12] * (SEARCH_ANGLES - 1) + [[0.0] * 11]}, "same length"),
        ({"template": [[float("nan")] * 12] * SEARCH_ANGLES}, "finite"),
        ({"skip": 14}, "skip < rings"),
        ({"rings": 10}, "rings - skip"),
        ({"range": 0.0}, "range"),
        ({"range": 181.0}, "range"),
    ],
)
def test_a_bad_angle_search_is_refused_with_a_clear_message(change: dict[str, object], message: str) -> None:
    good = {"range": 180.0, "rings": 14, "skip": 2, "template": [[0.0] * 12] * SEARCH_ANGLES}
    AngleSearch.model_validate(good)
    with pytest.raises(Exception, match=message) as info:
        try:
            AngleSearch.model_validate({**good, **change})
        except ManifestError as exc:  # pragma: no cover - the manifest wraps pydantic's error
            raise ValueError(str(exc)) from exc
    assert info.type.__name__ in ("ValidationError", "ValueError")
