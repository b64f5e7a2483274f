"""The one publish path: every record (a free-run verdict, a triggered result, a local event) goes to
every sink and every line interface through :meth:`ResultBus.publish`. Each outlet is a
:class:`~edge_agent.sinks.base.SinkWorker` (its own thread behind a bounded drop-oldest queue, drops and
errors counted), so a slow or failing interface never holds up inspection, exactly like a sink."""

from __future__ import annotations

from typing import Any

from edge_agent.sinks.base import Record, SinkWorker


class ResultBus:
    def __init__(self, sinks: list[SinkWorker]) -> None:
        #: the agent's own ``sinks`` list (shared, not copied)
        self.sinks = sinks
        #: the line interfaces' outlets
        self.interfaces: list[SinkWorker] = []

    def publish(self, record: Record) -> None:
        """Never blocks: each outlet only appends to its own bounded queue."""
        for o in self.sinks:
            o.offer(record)
        for o in self.interfaces:
            o.offer(record)

    def add(self, outlet: SinkWorker) -> None:
        self.interfaces.append(outlet)

    def stats(self) -> dict[str, Any]:
        return {o.name: o.stats() for o in (*self.sinks, *self.interfaces)}
