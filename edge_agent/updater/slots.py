"""The updater's disk: the persisted state record, the download area and the two model slots.

    <state_dir>/updater.json           the Record, written atomically after every transition
    <state_dir>/downloads/<sha>.part   an artifact being downloaded (chunks written in place)
    <state_dir>/slots/A/, slots/B/     bundle directories: model file + manifest.json (signed envelope)
    <state_dir>/slots/current          symlink to the committed slot, swapped atomically at commit
    <state_dir>/revocations.json       the newest revocation list accepted from the fleet

A slot is written only while it is not serving; the manifest goes last, so a half-staged slot is
never a bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bundle import MANIFEST_FILE, child_path, open_bundle, sha256_file
from edge_agent.errors import EdgelineError
from edge_agent.model import LoadedModel
from edge_agent.revocation_file import REVOCATIONS_FILE
from edge_agent.updater.machine import Record, Slot, SlotInfo
from edgeline.core.fsutil import fsync_dir, write_atomic
from edgeline.core.protocol.delivery import UpdaterState, envelope_bytes
from edgeline.core.protocol.signing import Envelope, TrustStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotDisk:
    state_dir: Path

    @property
    def record_path(self) -> Path:
        return self.state_dir / "updater.json"

    @property
    def downloads(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def slots(self) -> Path:
        return self.state_dir / "slots"

    @property
    def current(self) -> Path:
        return self.slots / "current"

    @property
    def revocations_path(self) -> Path:
        return self.state_dir / REVOCATIONS_FILE

    def slot_dir(self, slot: Slot) -> Path:
        return self.slots / slot

    def part_path(self, sha256: str) -> Path:
        return self.downloads / f"{sha256}.part"

    def prepare(self) -> None:
        for d in (self.downloads, self.slot_dir("A"), self.slot_dir("B")):
            d.mkdir(parents=True, exist_ok=True)

    # -- record ---------------------------------------------------------------------------------
    def load_record(self) -> Record:
        try:
            raw = self.record_path.read_bytes()
        except FileNotFoundError:
            return Record()
        except OSError as exc:
            raise EdgelineError(f"cannot read {self.record_path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EdgelineError(f"{self.record_path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EdgelineError(f"{self.record_path} does not hold an object")
        return Record.from_dict(data)

    def save_record(self, rec: Record) -> None:
        # compact: an indent would push json onto its slow pure-Python encoder (the record holds the manifest)
        write_atomic(self.record_path, json.dumps(rec.to_dict(), separators=(",", ":")).encode())

    # -- slots ----------------------------------------------------------------------------------
    def find_local(self, sha256: str, slots: Mapping[str, SlotInfo | None]) -> Path | None:
        """The model file of a slot that the record says holds ``sha256`` (a rollback needs no
        download). Found through the record, not by hashing every slot file at every offer (that
        hashed the serving model each time); the copy is checked chunk by chunk against the signed
        hashes when the download scans it, so a stale record costs a copy, never a wrong model."""
        for name in ("A", "B"):
            info = slots.get(name)
            if info is None or info.sha256 != sha256:
                continue
            d = self.slot_dir(name)
            for f in sorted(d.iterdir()) if d.exists() else ():
                if f.is_file() and f.name != MANIFEST_FILE and not f.name.startswith("."):
                    try:
                        if f.stat().st_size > 0:
                            return f
                    except OSError:
                        continue
        return None

    def stage(self, slot: Slot, part: Path, filename: str, sha256: str, envelope: Envelope) -> Path:
        """Move a verified artifact into ``slot`` and write its manifest last. Idempotent: a rerun
        after a crash finds the model already in place."""
        d = self.slot_dir(slot)
        target = self.model_path(slot, filename)  # before anything in the slot changes
        if self.committed_slot() == slot:
            raise EdgelineError(f"slot {slot} holds the committed model: a deployment never stages into it")
        d.mkdir(parents=True, exist_ok=True)
        (d / MANIFEST_FILE).unlink(missing_ok=True)
        fsync_dir(d)
        if part.exists():
            for stale in d.iterdir():
                if stale.is_file() and stale != target:
                    stale.unlink()
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)  # the download never fsynced: the bytes reach the disk here, once
            finally:
                os.close(fd)
            os.replace(part, target)
            fsync_dir(d)
        if not target.exists() or sha256_file(target) != sha256:
            raise EdgelineError(f"staged model in slot {slot} is missing or altered")
        write_atomic(d / MANIFEST_FILE, envelope_bytes(envelope))
        return d

    def model_path(self, slot: Slot, filename: str) -> Path:
        """The model file of ``slot``; ``filename`` comes from a signed manifest (or the record) and must
        be one plain name inside the slot directory (:class:`~edge_agent.errors.BundleError` if not)."""
        return child_path(self.slot_dir(slot), filename)

    def committed_slot(self) -> str | None:
        """The slot ``slots/current`` points to, if any."""
        try:
            return os.readlink(self.current)
        except OSError:
            return None

    def copy_into_part(self, source: Path, part: Path) -> None:
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_name(part.name + ".copy")
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, part)

    def point_current(self, slot: Slot) -> None:
        """Swap ``slots/current`` to ``slot`` atomically (a new symlink renamed over the old one)."""
        tmp = self.slots / ".current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(slot, tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.slots)

    def sync_current(self, active: Slot | None) -> None:
        """Make ``slots/current`` agree with the record (the record is the truth): a power cut between
        the link swap and the record of a commit leaves the link on the trial slot, which the restart
        rolls back; the link then goes back to the committed slot (or away, after a first install)."""
        if self.committed_slot() == active:
            return
        log.warning("slots/current pointed to %s, the record says %s: link repaired", self.committed_slot(), active)
        if active is None:
            self.current.unlink(missing_ok=True)
            fsync_dir(self.slots)
        else:
            self.point_current(active)

    def load_slot(self, slot: Slot, trust: TrustStore, threads: int = 1) -> LoadedModel:
        """Verify (signature, hashes; not expiry: a committed model keeps serving), load, self-test."""
        bundle = open_bundle(self.slot_dir(slot), trust, check_expiry=False)
        model = LoadedModel.load(bundle.manifest, bundle.model_path, threads=threads)
        model.self_test()
        return model

    def adopt_current(self, trust: TrustStore) -> Record:
        """A record rebuilt from ``slots/current`` when ``updater.json`` is lost or unreadable: the
        slot it points to is taken as committed if its bundle verifies; otherwise nothing is."""
        try:
            name = os.readlink(self.current)
            if name not in ("A", "B"):
                return Record()
            slot: Slot = "A" if name == "A" else "B"
            bundle = open_bundle(self.slot_dir(slot), trust, check_expiry=False)
        except (OSError, EdgelineError) as exc:
            log.warning("no committed slot to adopt: %s", exc)
            return Record()
        man = bundle.manifest
        info = SlotInfo(man.name, man.version, man.artifact.sha256, man.sequence)
        slots: dict[str, SlotInfo | None] = {"A": None, "B": None}
        slots[slot] = info
        return Record(state=UpdaterState.COMMITTED, active=slot, slots=slots, sequence=man.sequence)

    # -- revocations ----------------------------------------------------------------------------
    def save_revocations(self, payload: bytes) -> None:
        write_atomic(self.revocations_path, payload)

    def clean_downloads(self, keep: str | None = None) -> None:
        for f in self.downloads.iterdir():
            if keep is None or not f.name.startswith(keep):
                f.unlink(missing_ok=True)
