"""A Modbus TCP server (pymodbus) for the PLC: the last result in input registers (mirrored read-only in
holding registers), a trigger coil, a part-id register pair, and (map version 2) a feedback coil with its
truth and result registers. Addresses: :mod:`edge_agent.line.modbus_map`.

The registers the PLC reads are a snapshot built on the bus's worker thread and swapped in by one
reference assignment; the server's request handler copies it into the data block when a request reads
it, so one request never sees half of one result and half of the next."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.feedback.rules import FeedbackError, FeedbackRequest
from edge_agent.line import modbus_map as mm
from edge_agent.line.aioloop import LoopThread
from edge_agent.line.result import Record
from edge_agent.line.tcp_line import Submit
from firmware_configs.line_section import ModbusSection

log = logging.getLogger(__name__)

READ_IR, READ_HR = 4, 3
WRITE_COILS = (5, 15)
#: results remembered by their counter, for feedback that names one (holding registers 3-4)
KEEP_RESULTS = 1024


class ModbusLineServer:
    """Also the sink of the Modbus results (``name``, ``write``, ``close``)."""

    name = "line-modbus"

    def __init__(self, section: ModbusSection, submit: Submit, status: Callable[[], str], feedback: Any = None) -> None:
        self.section = section
        #: the agent's :class:`~edge_agent.feedback.service.FeedbackService` (None: not enabled)
        self._feedback = feedback
        self._results: OrderedDict[int, str] = OrderedDict()
        self._results_lock = threading.Lock()  # written by the bus's worker, read by the server's loop
        self._fb_status = 0
        self._fb_count = 0
        self._submit = submit
        self._status = status
        self._loop = LoopThread("line-modbus")
        self._snap: list[int] = [0] * mm.IR_COUNT
        self._snap[mm.IR_MAP_VERSION] = mm.MAP_VERSION
        self._defect = False
        self._missed = 0
        self._late = 0
        self.port = section.port
        self.triggers = 0
        self.triggers_ignored = 0
        self._server: ModbusTcpServer | None = None

    def _device(self) -> SimDevice:
        ir = [SimData(0, count=mm.IR_COUNT, values=0, datatype=DataType.REGISTERS)]
        hr = [
            SimData(0, count=mm.HR_WRITABLE, values=0, datatype=DataType.REGISTERS),
            SimData(mm.HR_MIRROR, count=mm.IR_COUNT, values=0, datatype=DataType.REGISTERS, readonly=True),
        ]
        coils = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        di = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(self.section.unit_id, simdata=(coils, di, hr, ir), action=self._action)

    def start(self) -> None:
        self._loop.start()
        self._loop.run(self._listen())

    async def _listen(self) -> None:
        self._server = ModbusTcpServer(self._device(), address=(self.section.host, self.section.port))
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        sockets = getattr(transport, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._loop.run(self._server.shutdown(), timeout=2.0)
            except Exception as exc:
                log.warning("closing the Modbus server failed: %s", exc)
        self._loop.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "map_version": mm.MAP_VERSION,
            "triggers": self.triggers,
            "triggers_ignored": self.triggers_ignored,
            "feedback": self._fb_count,
        }

    # -- the sink side -----------------------------------------------------------------------------------
    def write(self, record: Record) -> None:
        if record.get("type") != "verdict":
            return
        state = record.get("state")
        self._missed += state in ("missed", "refused")
        self._late += state == "late"
        self._defect = record.get("verdict") == "defect"
        seq, rid = record.get("result_seq"), record.get("result_id")
        if isinstance(seq, int) and rid:
            with self._results_lock:
                self._results[seq] = str(rid)
                while len(self._results) > KEEP_RESULTS:
                    self._results.popitem(last=False)
        self._snap = mm.result_registers(record, self._missed, self._late)

    def close(self) -> None:
        pass

    # -- the request handler (the server's loop) ---------------------------------------------------------
    def _live(self) -> list[int]:
        regs = list(self._snap)
        regs[mm.IR_STATUS] = mm.STATUS_CODES.get(self._status(), 0)
        regs[mm.IR_HEARTBEAT] = int(time.monotonic()) & 0xFFFF
        regs[mm.IR_FEEDBACK_STATUS] = self._fb_status
        regs[mm.IR_FEEDBACK_COUNT : mm.IR_FEEDBACK_COUNT + 2] = mm.u32(self._fb_count)
        return regs

    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if fc == READ_IR:
            registers[0 - start : mm.IR_COUNT - start] = self._live()
        elif fc == READ_HR and address + count > mm.HR_MIRROR:
            registers[mm.HR_MIRROR - start : mm.HR_MIRROR - start + mm.IR_COUNT] = self._live()
        elif fc == 2:
            registers[0] = (1 if self._status() == "RUNNING" else 0) | (2 if self._defect else 0)
        elif fc in WRITE_COILS and values:
            if _set(values, address, mm.COIL_FEEDBACK):
                await self._give_feedback()
                values[mm.COIL_FEEDBACK - address] = False  # handled: the coil reads 0 again
            if _set(values, address, mm.COIL_TRIGGER):
                self._trigger(registers)
                # the coil reads 0 again at once: the trigger is taken, the PLC may set it for the next part
                values[mm.COIL_TRIGGER - address] = False
        return None

    async def _give_feedback(self) -> None:
        """Coil 1: the truth of holding register 2 for the result of holding registers 3-4 (0: the last),
        stored off the server's loop; the outcome in input register 37, the counter in 38-39."""
        code, hi, lo = self._hr(mm.HR_FEEDBACK_TRUTH, 3)
        counter = (hi << 16) | lo
        truth = mm.FEEDBACK_TRUTH.get(code)
        with self._results_lock:
            if counter:
                rid = self._results.get(counter)
            else:
                rid = self._results[next(reversed(self._results))] if self._results else None
        service = self._feedback
        if service is None:
            outcome = "not_enabled"
        elif truth is None:
            outcome = service.refuse("modbus", FeedbackError(f"truth code {code} in HR 2", reason="bad_truth")).reason
        elif rid is None:
            why = f"no result {counter} in this run" if counter else "no result yet"
            outcome = service.refuse("modbus", FeedbackError(why, reason="unknown_result")).reason
        else:
            got = await asyncio.to_thread(service.submit, FeedbackRequest(truth=truth, result_id=str(rid)), "modbus")
            s = got.stored
            outcome = got.reason if s is None else ("stored" if s.previous is None else "replaced")
        self._fb_status = mm.FEEDBACK_STATUS.get(outcome, mm.FEEDBACK_STATUS["bad_truth"])
        self._fb_count += 1

    def _trigger(self, _coils: list[int]) -> None:
        hr = self._hr_part_id()
        t = self._submit(str(hr) if hr else "", None, "modbus")
        if t is None:
            self.triggers_ignored += 1
        else:
            self.triggers += 1

    def _hr_part_id(self) -> int:
        hi, lo = self._hr(mm.HR_PART_ID, 2)
        return int((hi << 16) | lo)

    def _hr(self, address: int, count: int) -> list[int]:
        """Holding registers as the PLC wrote them (zeros before the server runs)."""
        server = self._server
        if server is None:
            return [0] * count
        core: Any = server.context
        try:
            runtime = core.devices[self.section.unit_id]
        except (AttributeError, KeyError, TypeError):
            runtime = None
        if runtime is None:
            return [0] * count
        start, _, regs, _ = runtime.block["h"]
        return [int(regs[address + i - start]) for i in range(count)]


def _set(values: list[int] | list[bool], address: int, coil: int) -> bool:
    """A coil write (starting at ``address``) sets ``coil`` to 1."""
    return address <= coil < address + len(values) and bool(values[coil - address])
