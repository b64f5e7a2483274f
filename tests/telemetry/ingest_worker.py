"""One ingest worker as its own process, for the tests that kill it:

    python -m tests.telemetry.ingest_worker PORT STORE_URL CLIENT_ID [--die-in-batch N] [--ack-first]

``--die-in-batch N``: SIGKILL itself inside the N-th batch's transaction, after the windows are
written and before the commit. ``--ack-first``: acknowledge each batch to the broker BEFORE storing it
(the broken order, so the test shows it would see the loss). Prints ``ready`` once subscribed."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import INSERT_WINDOW, open_telemetry_store
from edgeline.core.mqtt_link import LinkSettings
from edgeline.core.protocol.topics import Topics


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("store_url")
    ap.add_argument("client_id")
    ap.add_argument("--die-in-batch", type=int, default=0)
    ap.add_argument("--ack-first", action="store_true")
    ap.add_argument("--partitions", type=int, default=0)
    args = ap.parse_args()
    store = open_telemetry_store(args.store_url)
    insert = store._insert
    batches = [0]

    def dying(sql: str, rows: list[Any], key_of: int = 0) -> list[bool]:
        out = insert(sql, rows, key_of)
        if sql == INSERT_WINDOW:
            batches[0] += 1
            if batches[0] == args.die_in_batch:
                os.kill(os.getpid(), signal.SIGKILL)  # inside the transaction, before COMMIT
        return out

    store._insert = dying  # type: ignore[method-assign]
    settings = LinkSettings(port=args.port, client_id=args.client_id, protocol="3.1.1", clean_start=False)
    svc = IngestService(Ingestor(store, Topics()), settings, shared=False, partitions=args.partitions, max_batch=50)
    if args.ack_first:
        process = svc._process

        def ack_then_store(batch: list[Any]) -> bool:
            for d in batch:
                svc.link.ack(d)
            time.sleep(0.3)  # the PUBACKs leave before the store is written
            return process(batch)

        svc._process = ack_then_store  # type: ignore[method-assign]
    svc.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    svc.run(stop, every_s=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
