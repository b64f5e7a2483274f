"""The demo and the local bench it runs on: ``edgeline demo`` end to end (cloud, camera simulator,
agent processes, the report), and the pieces tests and benchmarks borrow from it: a Mosquitto
launcher on a free port with its own config (:mod:`.broker`), a locked-down broker from a spec
(:mod:`.lockdown`) and the drift evaluation on synthetic lines (:mod:`.drift_eval`).

Nothing in the registry, the device or the build pipeline imports this room
(tests/test_architecture.py); it imports all of them.
"""
