"""The crash-safe model updater: a pure state machine (:mod:`.machine`), a resumable chunk
downloader (:mod:`.download`), two model slots on disk (:mod:`.slots`), a fail-closed trial
(:mod:`.trial`), and the plugin that drives them inside the agent (:mod:`.plugin`: its worker takes
the typed commands of :mod:`.commands`; :mod:`.keeper` persists and reports the record,
:mod:`.delivery` takes a deployment from offer to staged slot, :mod:`.activation` loads and tries it).
The device's assembly (:mod:`edge_agent.assembly`) builds the plugin."""
