"""The broker CA on disk: ``edgeline broker ca init`` / ``cert issue`` / ``cert revoke`` work on this.

Layout of a PKI directory::

    ca.key            CA private key (0600). Keep it offline: whoever holds it can mint identities.
    ca.crt            CA certificate: goes to the broker (cafile) and to every device and registry host.
    crl.pem           CA-signed revocation list; the broker's ``crlfile`` in mTLS mode.
    index.json        every certificate issued: serial, kind, identity, expiry, revocation time.
    server/<name>.crt|.key     broker certificate(s)
    devices/<id>.crt|.key      device client certificates (CN = device id)
    registry/<name>.crt|.key   registry client certificates (CN = registry identity)
    observers/<name>.crt|.key  read-only service identities (telemetry ingest, dashboards)

Device ids, registry and observer identities share one namespace (each becomes the MQTT username), so
the same name can never be issued as two kinds.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from pydantic import BaseModel, ConfigDict, ValidationError

from cloud_registry.security import certs
from cloud_registry.security.certs import CertKind
from cloud_registry.security.errors import SecurityError
from edgeline.core.fsutil import write_atomic

_SUBDIR: dict[str, str] = {"server": "server", "device": "devices", "registry": "registry", "observer": "observers"}


class CertRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serial: str  # hex
    kind: CertKind
    name: str
    issued_at: str
    not_after: str
    revoked_at: str | None = None


class Index(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_subject: str
    crl_number: int = 0
    certificates: list[CertRecord] = []


@dataclass(frozen=True)
class IssuedFiles:
    """What a host needs to connect: its certificate, its key and the CA certificate."""

    name: str
    kind: CertKind
    serial: str
    cert: Path
    key: Path
    ca: Path

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "serial": self.serial,
            "cert": str(self.cert),
            "key": str(self.key),
            "ca": str(self.ca),
        }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Pki:
    directory: Path

    # -- paths --------------------------------------------------------------------------------
    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    def cert_path(self, kind: CertKind, name: str) -> Path:
        return self.directory / _SUBDIR[kind] / f"{name}.crt"

    def key_path(self, kind: CertKind, name: str) -> Path:
        return self.directory / _SUBDIR[kind] / f"{name}.key"

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        common_name: str = "edgeline broker CA",
        valid_days: float = 3650.0,
        force: bool = False,
    ) -> Pki:
        pki = cls(Path(directory))
        if pki.ca_key_path.exists() and not force:
            raise SecurityError(f"{pki.ca_key_path} exists; pass force to replace the CA (every certificate with it)")
        key = certs.new_key()
        ca = certs.make_ca(key, common_name, valid_days)
        write_atomic(pki.ca_key_path, certs.key_pem(key), mode=0o600)
        write_atomic(pki.ca_cert_path, certs.cert_pem(ca))
        pki._save_index(Index(ca_subject=ca.subject.rfc4514_string()))
        pki.write_crl()
        return pki

    @classmethod
    def open(cls, directory: Path) -> Pki:
        pki = cls(Path(directory))
        if not pki.ca_cert_path.exists():
            raise SecurityError(f"no CA in {directory} (create one with 'edgeline broker ca init --pki {directory}')")
        return pki

    def _ca(self) -> tuple[Any, x509.Certificate]:
        try:
            key = certs.load_key_pem(self.ca_key_path.read_bytes(), str(self.ca_key_path))
            cert = certs.load_cert_pem(self.ca_cert_path.read_bytes(), str(self.ca_cert_path))
        except FileNotFoundError as exc:
            raise SecurityError(f"CA file {exc.filename} is missing: the CA key is needed to issue or revoke") from exc
        if cert.public_key() != key.public_key():
            raise SecurityError(f"{self.ca_key_path} does not belong to {self.ca_cert_path}")
        return key, cert

    def index(self) -> Index:
        try:
            return Index.model_validate_json(self.index_path.read_bytes())
        except FileNotFoundError as exc:
            raise SecurityError(f"{self.index_path} is missing: is {self.directory} a PKI directory?") from exc
        except ValidationError as exc:
            raise SecurityError(f"{self.index_path} is malformed: {exc.error_count()} error(s)") from exc

    def _save_index(self, index: Index) -> None:
        write_atomic(self.index_path, json.dumps(index.model_dump(), indent=2).encode())

    # -- issuing --------------------------------------------------------------------------------
    def issue(
        self, kind: CertKind, name: str, *, hosts: list[str] | None = None, valid_days: float = 365.0
    ) -> IssuedFiles:
        """Issue (or re-issue) a certificate. A re-issued identity's older certificates stay valid until
        they expire unless revoked; revoke them when the old key may be compromised."""
        if kind != "server":
            certs.check_identity(name, f"{kind} identity", station=kind == "device")
        else:
            certs.check_identity(name, "server name")
        index = self.index()
        clash = [r for r in index.certificates if r.name == name and r.kind not in (kind, "server")]
        if clash and kind != "server":
            raise SecurityError(
                f"{name!r} is already a {clash[0].kind} identity: one name cannot be two kinds of identity"
            )
        ca_key, ca_cert = self._ca()
        key = certs.new_key()
        cert = certs.issue(ca_key, ca_cert, key.public_key(), kind=kind, name=name, hosts=hosts, valid_days=valid_days)
        write_atomic(self.key_path(kind, name), certs.key_pem(key), mode=0o600)
        write_atomic(self.cert_path(kind, name), certs.cert_pem(cert))
        serial = format(cert.serial_number, "x")
        index.certificates.append(
            CertRecord(
                serial=serial,
                kind=kind,
                name=name,
                issued_at=_iso(dt.datetime.now(dt.UTC)),
                not_after=_iso(cert.not_valid_after_utc),
            )
        )
        self._save_index(index)
        return IssuedFiles(name, kind, serial, self.cert_path(kind, name), self.key_path(kind, name), self.ca_cert_path)

    # -- revoking -------------------------------------------------------------------------------
    def revoke(self, name: str, kind: CertKind | None = None, *, crl_valid_days: float = 90.0) -> list[CertRecord]:
        """Revoke every unrevoked certificate of an identity and rewrite the CRL. Returns what was revoked."""
        index = self.index()
        now = _iso(dt.datetime.now(dt.UTC))
        hit = [r for r in index.certificates if r.name == name and kind in (None, r.kind) and r.revoked_at is None]
        if not hit:
            raise SecurityError(f"no unrevoked certificate for {name!r} in {self.index_path}")
        for r in hit:
            r.revoked_at = now
        self._save_index(index)
        self.write_crl(valid_days=crl_valid_days)
        return hit

    def write_crl(self, valid_days: float = 90.0) -> Path:
        """(Re)issue the CRL with every revoked serial and a fresh ``next_update``."""
        index = self.index()
        ca_key, ca_cert = self._ca()
        revoked = [
            certs.Revoked(int(r.serial, 16), dt.datetime.fromisoformat(r.revoked_at))
            for r in index.certificates
            if r.revoked_at is not None
        ]
        index.crl_number += 1
        crl = certs.make_crl(ca_key, ca_cert, revoked, number=index.crl_number, valid_days=valid_days)
        write_atomic(self.crl_path, certs.crl_pem(crl))
        self._save_index(index)
        return self.crl_path

    def records(self) -> list[CertRecord]:
        return list(self.index().certificates)
