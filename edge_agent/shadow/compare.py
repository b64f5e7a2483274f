"""The champion x challenger comparison, as counts (pure: verdicts in, aggregates out).

``agreement[champion verdict][challenger verdict]`` counts frames; ``labels_agree`` counts frames
whose class label is the same; the challenger's confidence and anomaly-score histograms use the
telemetry windows' bin edges, so the cloud reads them the same way; its latency is kept as a bounded
window of milliseconds (p50/p99 reported)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from edge_agent.shadow.window import ShadowCounts
from edge_agent.telemetry.windows import ANOMALY_EDGES, CONF_EDGES

VERDICTS = ("ok", "defect", "unknown")


class ShadowComparison:
    def __init__(self, latency_window: int = 1000) -> None:
        self._lock = threading.Lock()
        self.agreement = {a: dict.fromkeys(VERDICTS, 0) for a in VERDICTS}
        self.labels_agree = 0
        self.compared = 0
        self.confidence = np.zeros(len(CONF_EDGES) - 1, dtype=np.int64)
        self.anomaly = np.zeros(len(ANOMALY_EDGES) - 1, dtype=np.int64)
        self._latency: deque[float] = deque(maxlen=latency_window)
        #: the same frames counted for the telemetry window being filled (:meth:`take_window`)
        self.window = ShadowCounts()

    def add(
        self,
        champion: tuple[str, str],
        challenger: tuple[str, str],
        confidence: float,
        anomaly_logit: float | None,
        latency_ms: float,
    ) -> None:
        """One frame: (verdict, label) of each model, the challenger's confidence, anomaly logit, time."""
        with self._lock:
            self.compared += 1
            if champion[0] in VERDICTS and challenger[0] in VERDICTS:
                self.agreement[champion[0]][challenger[0]] += 1
            self.labels_agree += champion[1] == challenger[1]
            self.confidence[_bin(CONF_EDGES, confidence)] += 1
            if anomaly_logit is not None:
                self.anomaly[_bin(ANOMALY_EDGES, anomaly_logit)] += 1
            self._latency.append(latency_ms)
            self.window.add(champion, challenger, confidence, anomaly_logit, latency_ms)

    def take_window(self) -> ShadowCounts:
        """The counts since the last call (the telemetry window that closes), and start afresh."""
        with self._lock:
            taken, self.window = self.window, ShadowCounts()
        return taken

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self._latency) if self._latency else None
            same = sum(self.agreement[v][v] for v in VERDICTS)
            return {
                "compared": self.compared,
                "verdict_agreement": same / self.compared if self.compared else None,
                "label_agreement": self.labels_agree / self.compared if self.compared else None,
                "agreement": {a: dict(row) for a, row in self.agreement.items()},
                "confidence_hist": self.confidence.tolist(),
                "anomaly_hist": self.anomaly.tolist(),
                "latency_ms": None
                if lat is None
                else {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
            }


def _bin(edges: np.ndarray, value: float) -> int:
    """The histogram bin of ``value``; values beyond the edges go to the first or last bin."""
    i = int(np.searchsorted(edges, value, side="right")) - 1
    return min(max(i, 0), len(edges) - 2)
