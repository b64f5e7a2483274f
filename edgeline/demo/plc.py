"""A simulated PLC for the triggered scenario: a Modbus TCP client (pymodbus) that does what a line's
controller does when a light barrier sees a part arrive.

Per part: write the part number to holding registers 0-1, set the trigger coil, then poll the result
registers once per PLC cycle until they show this part, and read the verdict, the result state, the
class and the confidence (register map v1, :mod:`edge_agent.line.modbus_map`). A part whose result does
not appear within ``timeout_s`` is recorded as ``no_result`` (the agent reports it missed or late on its
own counters; this side says what the PLC saw).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.line import modbus_map as mm
from edge_agent.line.result import STATE_CODES, VERDICT_CODES
from edgeline.demo.errors import DemoError

log = logging.getLogger(__name__)

VERDICTS = {code: name for name, code in VERDICT_CODES.items() if name is not None}
STATES = {code: name for name, code in STATE_CODES.items()}


@dataclass(frozen=True)
class PlcRead:
    """What the PLC read back for one part."""

    part: int
    verdict: str  # ok | defect | unknown | no_result
    state: str  # ok | late | missed | refused | error | no_result
    class_index: int | None
    confidence: float | None
    #: from setting the trigger coil to the read that showed this part's result, milliseconds
    latency_ms: float | None

    @property
    def part_id(self) -> str:
        """The part id the station reports (the part number as text)."""
        return str(self.part)

    @property
    def verdict_or_none(self) -> str | None:
        """The verdict as the station's records spell it (None when nothing was inspected)."""
        return self.verdict if self.verdict in ("ok", "defect", "unknown") else None


def decode(part: int, regs: list[int], latency_ms: float) -> PlcRead:
    """One part's result from the input registers 0..IR_COUNT-1 (pure: the unit tests feed it words)."""
    index = regs[mm.IR_CLASS]
    return PlcRead(
        part=part,
        verdict=VERDICTS.get(regs[mm.IR_VERDICT], "none"),
        state=STATES.get(regs[mm.IR_STATE], "unknown"),
        class_index=None if index == mm.NO_CLASS else index,
        confidence=regs[mm.IR_CONFIDENCE] / mm.CONFIDENCE_SCALE if regs[mm.IR_VERDICT] else None,
        latency_ms=latency_ms,
    )


def part_of(regs: list[int]) -> int:
    return (regs[mm.IR_PART_ID] << 16) | regs[mm.IR_PART_ID + 1]


class SimulatedPlc:
    """The PLC's side of register map v1 over one Modbus TCP connection."""

    def __init__(self, host: str, port: int, *, unit: int = 1, cycle_s: float = 0.002, timeout_s: float = 2.0):
        try:
            from pymodbus.client import ModbusTcpClient
        except ImportError as exc:  # the line extra
            raise DemoError("the triggered scenario needs pymodbus: pip install 'edgeline[line]'") from exc
        self.client = ModbusTcpClient(host, port=port, timeout=timeout_s)
        self.unit = unit
        self.cycle_s = cycle_s
        self.timeout_s = timeout_s

    def connect(self, wait_s: float = 20.0) -> None:
        deadline = time.monotonic() + wait_s
        while not self.client.connect():
            if time.monotonic() > deadline:
                raise DemoError(f"the station's Modbus server did not answer within {wait_s:.0f} s")
            time.sleep(0.2)
        regs = self._read()
        if regs[mm.IR_MAP_VERSION] != mm.MAP_VERSION:
            raise DemoError(f"the station speaks register map v{regs[mm.IR_MAP_VERSION]}, this PLC v{mm.MAP_VERSION}")

    def close(self) -> None:
        self.client.close()

    def ready(self) -> bool:
        """The station serves a model (status register RUNNING)."""
        return self._read()[mm.IR_STATUS] == mm.STATUS_CODES["RUNNING"]

    def _read(self) -> list[int]:
        rr = self.client.read_input_registers(0, count=mm.IR_COUNT, device_id=self.unit)
        if rr.isError():
            raise DemoError(f"reading the station's result registers failed: {rr}")
        return list(rr.registers)

    def inspect(self, part: int) -> PlcRead:
        """Trigger one part and wait for its result."""
        if self.client.write_registers(mm.HR_PART_ID, mm.u32(part), device_id=self.unit).isError():
            raise DemoError("writing the part id registers failed")
        t0 = time.monotonic()
        if self.client.write_coil(mm.COIL_TRIGGER, True, device_id=self.unit).isError():
            raise DemoError("setting the trigger coil failed")
        while True:
            regs = self._read()
            if part_of(regs) == part:
                return decode(part, regs, (time.monotonic() - t0) * 1000.0)
            if time.monotonic() - t0 > self.timeout_s:
                return PlcRead(part, "no_result", "no_result", None, None, None)
            time.sleep(self.cycle_s)

    def run(self, first: int, count: int, rate: float, tick: Callable[[int], None] | None = None) -> list[PlcRead]:
        """``count`` parts from part number ``first``, arriving at ``rate`` parts per second."""
        reads: list[PlcRead] = []
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            reads.append(self.inspect(first + i))
            if tick is not None:
                tick(i + 1)
        return reads
