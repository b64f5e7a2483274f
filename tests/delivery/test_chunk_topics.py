"""Chunk topics have ONE spelling per index. ``chunks/00``, ``chunks/000`` or ``chunks/01`` are not
aliases of chunks 0 and 1: garbage retained there (before the artifact is even published, by anyone
with write access to the artifact tree) would otherwise fail every download of that artifact, and
republishing the artifact would not heal it (the planted messages stay retained)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.errors import ProtocolError
from edgeline.core.protocol.topics import Topics
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.delivery.test_rejections import running_v1

SHA = "ab" * 32


@pytest.mark.parametrize("suffix", ["00", "000", "01", "007", "0000000000000000000001", "+1", "-0", " 1", "1 "])
def test_only_the_canonical_chunk_index_parses(suffix: str) -> None:
    topics = Topics()
    with pytest.raises(ProtocolError):
        topics.chunk_index_from(f"{topics.base}/artifacts/{SHA}/chunks/{suffix}")


@pytest.mark.parametrize("index", [0, 1, 7, 10, 1234567])
def test_canonical_chunk_topics_round_trip(index: int) -> None:
    topics = Topics()
    assert topics.chunk_index_from(topics.artifact_chunk(SHA, index)) == (SHA, index)


def test_garbage_planted_on_chunk_topic_aliases_does_not_fail_the_download(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = running_v1(cloud, frames, bundles)
    sha = bundles[2].manifest.artifact.sha256
    base = cloud.topics.artifact_chunk(sha, 0).rpartition("/")[0]
    for alias in ("00", "000", "01", "0001"):  # retained before the artifact exists
        cloud.link.publish_sync(f"{base}/{alias}", b"planted garbage", 1, True)
    cloud.deploy(bundles[2], "dev-r")
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED"), (dev.kinds(), dev.reasons())
    assert "rejected" not in dev.kinds()
