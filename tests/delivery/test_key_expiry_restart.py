"""The signing key's certificate (and the manifest) are checked when a deployment is ACCEPTED, not when
the committed model is loaded again: a device restarted after the signing certificate expired keeps
serving its committed model (docs/security.md: "Devices not reached in time refuse every new manifest
after the expiry, and keep running their current model").

The real agent process is restarted with its wall clock moved 400 days ahead by libfaketime (the
session signing key is certified for 365 days, the manifest for 30), the injected clock of the whole
process: every ``time.time()`` the agent, the updater and the signature checks make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converters.keys import KeyPaths
from tests.delivery.agent_proc import AgentProcess, write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for

FAKETIME_LIBS = (
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/faketime/libfaketime.so.1"),
)


def faketime_env(offset: str) -> dict[str, str]:
    lib = next((p for p in FAKETIME_LIBS if p.exists()), None)
    if lib is None:  # a skip would count as passing in a summary
        pytest.fail("libfaketime is not installed: apt-get install -y faketime")
    # only the wall clock moves: waits on the monotonic clock (threads, timeouts) stay real
    return {"LD_PRELOAD": str(lib), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def serving(p: AgentProcess, sha: str) -> bool:
    st = p.status()
    if not st or not p.alive or p.proc is None or st.get("pid") != p.proc.pid:
        return False
    return (st.get("model") or {}).get("sha256") == sha and st["frames"]["inspected"] > 0


def test_a_restart_after_the_signing_certificate_expired_keeps_serving_the_committed_model(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    p = AgentProcess(
        "expiry-1",
        tmp_path / "expiry-1",
        cloud.broker.port,
        KeyPaths(cloud.key_dir).trust,
        write_frames(tmp_path / "frames", frames),
        {"trial_frames": 3, "trial_timeout_s": 30.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0},
        {},
    )
    v1 = bundles[1].manifest.artifact.sha256
    p.start(with_faults=False)
    try:
        cloud.deploy(bundles[1], p.device_id)
        assert wait_for(lambda: serving(p, v1) and (p.record() or {}).get("state") == "COMMITTED", 60), p.log_tail()
        assert cloud.signer.certificate.expires_at < cloud.signer.certificate.issued_at + 366 * 86400
        p.terminate()

        # the power comes back 400 days later: the signing certificate and the manifest have expired
        p.env = faketime_env("+400d")
        p.start(with_faults=False)
        assert wait_for(lambda: serving(p, v1), 60), f"no model after the restart\n{p.status()}\n{p.log_tail()}"
        st = p.status()
        assert st is not None and st["updated_at"] > cloud.signer.certificate.expires_at  # the clock did move
        assert (p.record() or {}).get("active") == "A"

        # acceptance still checks the key: a new deployment signed by the expired key is refused
        cloud.deploy(bundles[2], p.device_id)
        assert wait_for(
            lambda: any(e.device_id == p.device_id and e.reason == "key_expired" for e in cloud.seen_events), 30
        ), p.log_tail()
        assert serving(p, v1)
    finally:
        p.sigkill()
