"""The crash-safe model updater: a pure state machine (:mod:`.machine`), a resumable chunk
downloader (:mod:`.download`), two model slots on disk (:mod:`.slots`), a fail-closed trial
(:mod:`.trial`), and the plugin that drives them inside the agent (:mod:`.plugin`)."""
