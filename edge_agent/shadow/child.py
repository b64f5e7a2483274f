"""The challenger's own process: it verifies, loads and self-tests the bundle, then inspects the frames
its parent hands it through shared memory with the same ``inspect_frame`` as the champion, and sends
back only the verdict's few fields and its CPU time. A process of its own, at a lower priority: the
champion never shares an interpreter lock with it."""

from __future__ import annotations

import contextlib
import os
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

#: what the child answers for one frame: (verdict, label, confidence, anomaly logit, latency ms, CPU s)
Answer = tuple[str, str, float, float | None, float, float]


def child_main(conn: Connection, bundle: str, trust_file: str, threads: int, nice: int, idle: bool = False) -> None:
    """Runs in the child (spawned): ("ready", model info) or ("refused", reason) first, then one
    answer per ("frame", shm name, shape, dtype, frame id) until None. ``idle``: the process goes
    into Linux's SCHED_IDLE class (it runs only on CPU time no other process wants)."""
    from edge_agent.errors import EdgelineError
    from edge_agent.inference import inspect_frame, load_and_check, model_info
    from edgeline.core.protocol.signing import TrustStore

    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if idle and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        model = load_and_check(bundle, TrustStore.load(Path(trust_file)), threads=threads, check_expiry=False)
    except (EdgelineError, OSError) as exc:
        conn.send(("refused", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", model_info(model)))
    shm: shared_memory.SharedMemory | None = None
    try:
        while True:
            msg: Any = conn.recv()
            if msg is None:
                return
            _, name, shape, dtype, frame_id = msg
            if shm is None or shm.name != name:
                if shm is not None:
                    shm.close()
                shm = shared_memory.SharedMemory(name=name)
            image = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)
            c0 = time.thread_time()
            try:
                r = inspect_frame(model, image, frame_id)
            except EdgelineError as exc:
                conn.send(("error", str(exc), time.thread_time() - c0))
                continue
            v = r.verdict
            answer: Answer = (v.verdict, v.label, v.confidence, r.anomaly_logit, v.latency_ms, time.thread_time() - c0)
            conn.send(("ok", *answer))
    except (EOFError, OSError):
        return  # the parent went away
    finally:
        if shm is not None:
            shm.close()
