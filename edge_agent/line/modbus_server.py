"""A Modbus TCP server (pymodbus) for the PLC: the last result in input registers (mirrored read-only in
holding registers), a trigger coil, a part-id register pair. Addresses: :mod:`edge_agent.line.modbus_map`.

The registers the PLC reads are a snapshot built on the bus's worker thread and swapped in by one
reference assignment; the server's request handler copies it into the data block when a request reads
it, so one request never sees half of one result and half of the next."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.line import modbus_map as mm
from edge_agent.line.aioloop import LoopThread
from edge_agent.line.result import Record
from edge_agent.line.tcp_line import Submit
from firmware_configs.line_section import ModbusSection

log = logging.getLogger(__name__)

READ_IR, READ_HR = 4, 3
WRITE_COILS = (5, 15)


class ModbusLineServer:
    """Also the sink of the Modbus results (``name``, ``write``, ``close``)."""

    name = "line-modbus"

    def __init__(self, section: ModbusSection, submit: Submit, status: Callable[[], str]) -> None:
        self.section = section
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
        }

    # -- the sink side -----------------------------------------------------------------------------------
    def write(self, record: Record) -> None:
        if record.get("type") != "verdict":
            return
        state = record.get("state")
        self._missed += state in ("missed", "refused")
        self._late += state == "late"
        self._defect = record.get("verdict") == "defect"
        self._snap = mm.result_registers(record, self._missed, self._late)

    def close(self) -> None:
        pass

    # -- the request handler (the server's loop) ---------------------------------------------------------
    def _live(self) -> list[int]:
        regs = list(self._snap)
        regs[mm.IR_STATUS] = mm.STATUS_CODES.get(self._status(), 0)
        regs[mm.IR_HEARTBEAT] = int(time.monotonic()) & 0xFFFF
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
        elif (
            fc in WRITE_COILS
            and values
            and address <= mm.COIL_TRIGGER < address + len(values)
            and values[mm.COIL_TRIGGER - address]
        ):
            self._trigger(registers)
            # the coil reads 0 again at once: the trigger is taken, the PLC may set it for the next part
            values[mm.COIL_TRIGGER - address] = False
        return None

    def _trigger(self, _coils: list[int]) -> None:
        hr = self._hr_part_id()
        t = self._submit(str(hr) if hr else "", None, "modbus")
        if t is None:
            self.triggers_ignored += 1
        else:
            self.triggers += 1

    def _hr_part_id(self) -> int:
        server = self._server
        if server is None:
            return 0
        core: Any = server.context
        try:
            runtime = core.devices[self.section.unit_id]
        except (AttributeError, KeyError, TypeError):
            runtime = None
        if runtime is None:
            return 0
        start, _, regs, _ = runtime.block["h"]
        hi, lo = regs[mm.HR_PART_ID - start], regs[mm.HR_PART_ID + 1 - start]
        return int((hi << 16) | lo)
