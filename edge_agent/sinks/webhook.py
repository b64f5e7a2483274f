"""Verdicts POSTed as JSON to an HTTP endpoint of the line (stdlib only)."""

from __future__ import annotations

import urllib.error
import urllib.request

from edge_agent.sinks.base import Record, SinkError, encode


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, *, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def write(self, record: Record) -> None:
        req = urllib.request.Request(self.url, data=encode(record), headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            raise SinkError(f"webhook {self.url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(f"webhook {self.url} unreachable: {reason}") from exc

    def close(self) -> None:
        pass
