"""The Modbus register map, version 2 (docs/line.md has the table). Every address is here and only here.

Input registers (function 4) hold the last result; the same words are mirrored, read-only, as holding
registers at :data:`HR_MIRROR` (function 3) for PLCs that read holding registers only. The PLC writes
the part id to holding registers 0-1 and sets coil 0; the agent takes the trigger and clears the coil.
32-bit values are two registers, high word first.

Version 2 adds operator feedback and keeps every address of version 1: the PLC writes the truth code
to holding register 2 (0 confirm, 1 ok, 2 defect) and the result counter of the result it means to
holding registers 3-4 (0: the last result), then sets coil 1; input registers 37 (the outcome) and
38-39 (a counter of feedback handled) answer.
"""

from __future__ import annotations

from typing import Any

MAP_VERSION = 2

# -- input registers (and holding registers HR_MIRROR + the same offset) ----------------------------------
IR_MAP_VERSION = 0
IR_STATUS = 1
IR_HEARTBEAT = 2
IR_RESULT_COUNT = 3  # u32: 3-4
IR_VERDICT = 5
IR_STATE = 6
IR_CLASS = 7
IR_CONFIDENCE = 8
IR_UNCERTAIN = 9
IR_PART_ID = 10  # u32: 10-11 (the numeric part id; 0 when the part id is not a number)
IR_TRIGGER_ID = 12  # u32: 12-13
IR_MODEL_VERSION = 14
IR_INSPECT_TIME = 15
IR_TOTAL_TIME = 16
IR_MISSED = 17  # u32: 17-18
IR_LATE = 19  # u32: 19-20
IR_PART_TEXT = 21  # 16 registers, 32 ASCII characters, 2 per register (high byte first), NUL padded
PART_TEXT_REGS = 16
# -- version 2: feedback ---------------------------------------------------------------------------------
IR_FEEDBACK_STATUS = 37  # the outcome of the last feedback: FEEDBACK_STATUS
IR_FEEDBACK_COUNT = 38  # u32: 38-39, feedback handled (any outcome) since start; poll this
IR_COUNT = 40

HR_PART_ID = 0  # u32: 0-1, written by the PLC before it sets the trigger coil
HR_FEEDBACK_TRUTH = 2  # FEEDBACK_TRUTH code, written before the feedback coil
HR_FEEDBACK_RESULT = 3  # u32: 3-4, the result counter (IR 3-4) of the result meant; 0 = the last result
HR_WRITABLE = 5
HR_MIRROR = 100

COIL_TRIGGER = 0
COIL_FEEDBACK = 1
DI_READY = 0
DI_LAST_DEFECT = 1

CONFIDENCE_SCALE = 10_000  # confidence 0..1 -> 0..10000
TIME_SCALE = 100  # milliseconds -> units of 10 us, capped at 65535
NO_CLASS = 0xFFFF

#: holding register 2 -> the truth given (``confirm``: the verdict is right)
FEEDBACK_TRUTH: dict[int, str] = {0: "confirm", 1: "ok", 2: "defect"}
#: the outcome of a feedback (input register 37); 0 = none yet
FEEDBACK_STATUS: dict[str, int] = {
    "stored": 1,
    "replaced": 2,
    "unknown_result": 3,
    "no_verdict": 4,
    "bad_truth": 5,
    "store": 6,
    "not_enabled": 7,
}

#: agent state -> status register
STATUS_CODES: dict[str, int] = {
    "CREATED": 0,
    "STARTING": 0,
    "RUNNING": 1,
    "NO_MODEL": 2,
    "STOPPING": 3,
    "STOPPED": 3,
    "FAILED": 4,
}


def u32(value: int) -> list[int]:
    v = int(value) & 0xFFFFFFFF
    return [v >> 16, v & 0xFFFF]


def text_regs(text: str) -> list[int]:
    raw = text.encode("ascii", "replace")[: PART_TEXT_REGS * 2].ljust(PART_TEXT_REGS * 2, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def scaled_ms(ms: Any) -> int:
    return 0 if ms is None else min(0xFFFF, max(0, round(float(ms) * TIME_SCALE)))


def result_registers(rec: dict[str, Any], missed: int, late: int) -> list[int]:
    """Input registers 0..IR_COUNT-1 for one result (status and heartbeat filled at read time)."""
    from edge_agent.line.result import STATE_CODES, VERDICT_CODES

    regs = [0] * IR_COUNT
    regs[IR_MAP_VERSION] = MAP_VERSION
    regs[IR_RESULT_COUNT : IR_RESULT_COUNT + 2] = u32(int(rec.get("result_seq") or 0))
    regs[IR_VERDICT] = VERDICT_CODES.get(rec.get("verdict"), 0)
    regs[IR_STATE] = STATE_CODES.get(str(rec.get("state") or "ok"), 0)
    index = rec.get("class_index")
    regs[IR_CLASS] = NO_CLASS if index is None or index < 0 else int(index)
    conf = rec.get("confidence")
    regs[IR_CONFIDENCE] = 0 if conf is None else min(CONFIDENCE_SCALE, max(0, round(float(conf) * CONFIDENCE_SCALE)))
    regs[IR_UNCERTAIN] = 1 if rec.get("uncertain") else 0
    part = str(rec.get("part_id") or "")
    regs[IR_PART_ID : IR_PART_ID + 2] = u32(int(part) if part.isdigit() and int(part) <= 0xFFFFFFFF else 0)
    regs[IR_TRIGGER_ID : IR_TRIGGER_ID + 2] = u32(int(rec.get("trigger_id") or 0))
    regs[IR_MODEL_VERSION] = int(rec.get("model_version") or 0) & 0xFFFF
    times = rec.get("times") or {}
    regs[IR_INSPECT_TIME] = scaled_ms(times.get("inspect_ms", rec.get("latency_ms")))
    regs[IR_TOTAL_TIME] = scaled_ms(times.get("total_ms"))
    regs[IR_MISSED : IR_MISSED + 2] = u32(missed)
    regs[IR_LATE : IR_LATE + 2] = u32(late)
    regs[IR_PART_TEXT : IR_PART_TEXT + PART_TEXT_REGS] = text_regs(part)
    return regs
