"""Run a locked-down broker from a spec, and connect to it: for tests, the demo and fault campaigns.

Production brokers get their files from ``edgeline broker config render``; this module starts a
:class:`~edgeline.demo.broker.MosquittoBroker` (own workdir, persistence and log) with the very same
security section and ACL, so what the tests prove is what production runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud_registry.security.broker_config import BrokerSpec, parse_spec, render_acl, render_security
from cloud_registry.security.certs import CertKind
from cloud_registry.security.errors import SecurityError
from cloud_registry.security.pki import Pki
from edgeline.core.fsutil import write_atomic
from edgeline.core.mqtt_link import LinkSettings, TlsSettings, wait_until
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker, free_port

_RELOAD_MARK = "Reloading config."
#: Mosquitto logs its reloads at the "information" level
_RELOAD_LOGGING = "log_type information\n"


def local_spec(
    auth: str,
    pki: Pki,
    workdir: Path,
    *,
    topics: Topics,
    devices: dict[str, list[str]],
    password_file: Path | None = None,
    **fields: Any,
) -> BrokerSpec:
    """A spec for a broker on a free loopback port (tests, benchmarks): TLS with ``pki``'s CA, its
    ``server/broker`` certificate and its CRL; the ACL at ``workdir/acl``; with password
    authentication, the password file at ``password_file`` (default ``workdir/passwd``); ``devices``
    maps each device id to its groups. ``fields`` adds spec keys (``registry``, ``observers``,
    ``max_packet_size``, ...)."""
    return parse_spec(
        {
            "auth": auth,
            "bind": "127.0.0.1",
            "port": free_port(),
            "topic_root": topics.root,
            "fleet": topics.fleet,
            "tls": {
                "cafile": str(pki.ca_cert_path),
                "certfile": str(pki.cert_path("server", "broker")),
                "keyfile": str(pki.key_path("server", "broker")),
                "crlfile": str(pki.crl_path),
            },
            "acl_file": str(workdir / "acl"),
            "password_file": str(password_file or workdir / "passwd") if auth == "password" else None,
            "devices": [{"id": d, "groups": g} for d, g in devices.items()],
            **fields,
        }
    )


def locked_broker(spec: BrokerSpec, workdir: Path) -> MosquittoBroker:
    """A (not yet started) Mosquitto with ``spec``'s listener, TLS, authentication and ACL. The ACL is
    written to ``spec.acl_file`` now; call :func:`apply_spec` after changing the spec."""
    write_atomic(Path(spec.acl_file), render_acl(spec).encode(), mode=0o640)
    return MosquittoBroker(
        Path(workdir),
        port=spec.port,
        host=_connect_host(spec.bind),
        extra_config=render_security(spec) + _RELOAD_LOGGING,
        default_listener=False,
    )


def apply_spec(broker: MosquittoBroker, spec: BrokerSpec, timeout: float = 10.0) -> None:
    """Re-render ACL and security section for a running broker and reload it. Mosquitto 2.0.11 re-reads the
    ACL, the password file and the CRL on reload; a listener change needs a restart."""
    write_atomic(Path(spec.acl_file), render_acl(spec).encode(), mode=0o640)
    broker.extra_config = render_security(spec) + _RELOAD_LOGGING
    reload_and_wait(broker, timeout)


def reload_and_wait(broker: MosquittoBroker, timeout: float = 10.0) -> None:
    """SIGHUP the broker and wait until its log shows the reload. Mosquitto's event loop is single-threaded,
    so any connection it handles after that line is judged by the new ACL, passwords and CRL."""
    before = _log_text(broker).count(_RELOAD_MARK)
    broker.reload()
    if not wait_until(lambda: _log_text(broker).count(_RELOAD_MARK) > before, timeout):
        raise SecurityError(f"the broker did not log a reload within {timeout}s (is log_type notice on?)")


def _log_text(broker: MosquittoBroker) -> str:
    try:
        return broker.log_path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _connect_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def client_settings(
    spec: BrokerSpec,
    identity: str,
    *,
    pki: Pki | None = None,
    ca_file: Path | None = None,
    password: str | None = None,
    host: str | None = None,
    client_id: str | None = None,
    protocol: str = "5",
) -> LinkSettings:
    """MqttLink settings for ``identity`` on a broker rendered from ``spec``.

    mTLS: the certificate and key come from ``pki`` (``devices/<id>`` or ``registry/<name>``).
    Password: ``password`` is required; the CA certificate still authenticates the broker.
    """
    ca = Path(ca_file) if ca_file is not None else (pki.ca_cert_path if pki is not None else None)
    if ca is None:
        raise SecurityError("a TLS connection needs the CA certificate (pki or ca_file)")
    cert_file = key_file = None
    if spec.auth == "mtls":
        if pki is None:
            raise SecurityError("mTLS needs the PKI directory holding the identity's certificate")
        kinds: tuple[CertKind, ...] = ("device", "registry", "observer")
        kind = next((k for k in kinds if pki.cert_path(k, identity).exists()), None)
        if kind is None:
            raise SecurityError(f"no client certificate for {identity!r} in {pki.directory}")
        cert_file, key_file = str(pki.cert_path(kind, identity)), str(pki.key_path(kind, identity))
        username = None
    else:
        if password is None:
            raise SecurityError(f"password authentication: no password given for {identity!r}")
        username = identity
    return LinkSettings(
        host=host or _connect_host(spec.bind),
        port=spec.port,
        client_id=client_id or identity,
        username=username,
        password=password,
        tls=TlsSettings(ca_file=str(ca), cert_file=cert_file, key_file=key_file),
        protocol="5" if protocol == "5" else "3.1.1",
    )
