"""The ``[feedback]`` section: the shipped triggered-station profile turns it on, free-run refuses it
with the reason, and bad values are named."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_configs.errors import ConfigError
from firmware_configs.loader import load_config, parse_config, profiles_dir


def _doc(source_mode: str = "trigger", **feedback: Any) -> dict[str, Any]:
    return {
        "device": {"id": "st-1"},
        "source": {"kind": "folder", "path": "/tmp/frames", "mode": source_mode},
        "feedback": {"enabled": True, **feedback},
    }


def test_the_triggered_station_profile_takes_feedback_in_the_state_dir() -> None:
    c = load_config(profiles_dir() / "triggered-station.toml")
    assert c.feedback.enabled and c.feedback.keep_results == 2000
    assert c.feedback_path == "/var/lib/edgeline/feedback.db"


def test_a_path_of_its_own_and_the_state_dir_default() -> None:
    assert parse_config(_doc(path="/data/fb.db")).feedback_path == "/data/fb.db"
    doc = {**_doc(), "updater": {"state_dir": "/srv/edgeline/"}}
    assert parse_config(doc).feedback_path == "/srv/edgeline/feedback.db"


def test_free_run_takes_feedback_too() -> None:
    # free-run verdicts then carry a result id (<device>-<boot>-f<frame_id>) that feedback can name
    assert parse_config(_doc("free")).feedback.enabled


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (_doc(keep_results=3), "feedback.keep_results"),
        (_doc(page_results=1000), "feedback.page_results"),
        (_doc(path="  "), "feedback.path"),
        (_doc(colour="red"), "feedback.colour"),
    ],
)
def test_refusals_name_the_problem(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert says in str(err.value)
