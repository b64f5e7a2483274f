"""Render a locked-down Mosquitto 2.0 configuration from a broker spec (TOML or JSON).

What the rendered broker enforces:

* one TLS listener (TLS 1.2+), no anonymous client;
* authentication by password (PBKDF2-SHA512 password file) or by client certificate (mTLS:
  ``require_certificate true`` + ``use_identity_as_username true``, the certificate's CN is the
  username; a CRL refuses revoked certificates);
* the identity is pinned as the client id (``use_username_as_clientid``), so no client can take over
  another's session;
* an allow-list ACL generated from :class:`~edgeline.core.protocol.topics.Topics`: each device reads its own
  and its groups' desired state, the artifacts and the revocation list, and writes only its own state,
  events and telemetry, and reads its own end-to-end acknowledgements and the ingest's capabilities;
  registry identities write desired state, artifacts and revocations and read what devices report;
  ingest identities read what devices report and write the acknowledgements (``devices/+/acks``) and
  the retained ``ingest/capabilities``; observer identities (dashboards) only read what devices report.
  An identity that the spec does not list has no rights at all, even with a valid certificate.

Pure rendering here; :func:`write_broker_files` is the only function that touches the disk.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from cloud_registry.security.certs import check_identity
from cloud_registry.security.errors import SecurityError
from edgeline.core.errors import ProtocolError
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.topics import Topics, check_segment
from edgeline.core.strict import Strict

DEFAULT_MAX_PACKET = 4 * 1024 * 1024


def _absolute(value: str, what: str) -> str:
    if not Path(value).is_absolute():
        raise ValueError(f"{what} must be an absolute path (the broker resolves relative paths from its cwd)")
    if any(c in value for c in "\n\r") or value != value.strip():
        raise ValueError(f"{what} has surrounding whitespace or a line break")
    return value


class TlsPaths(Strict):
    """Where the broker finds its TLS files (paths on the broker host)."""

    cafile: str
    certfile: str
    keyfile: str
    crlfile: str | None = None

    @field_validator("cafile", "certfile", "keyfile", "crlfile")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v, "a TLS file path")


class DeviceEntry(Strict):
    id: str
    groups: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _identity(v, "device id", station=True)  # a station is listed as its own device

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            try:
                check_segment(g, "group name")
            except ProtocolError as exc:
                raise ValueError(str(exc)) from exc
        if len(set(v)) != len(v):
            raise ValueError("a group is listed twice")
        return v


def _identity(v: str, what: str, station: bool = False) -> str:
    try:
        return check_identity(v, what, station=station)
    except SecurityError as exc:
        raise ValueError(str(exc)) from exc


class BrokerSpec(Strict):
    """Everything the broker configuration is rendered from. Unknown keys are errors."""

    auth: Literal["password", "mtls"]
    bind: str = "0.0.0.0"
    port: int = Field(default=8883, ge=1, le=65535)
    topic_root: str = "edgeline"
    fleet: str = "default"
    tls: TlsPaths
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"
    acl_file: str = "/etc/mosquitto/edgeline/acl"
    password_file: str | None = None
    pin_client_id: bool = True
    #: Largest MQTT packet accepted; a client sending more is disconnected. Artifact chunks must fit.
    max_packet_size: int | None = Field(default=DEFAULT_MAX_PACKET, ge=4096)
    #: Per-client queue of QoS 1 messages. Mosquitto's default (1000) silently drops telemetry for an
    #: ingest that falls behind while a fleet flushes its outboxes after an outage; 0 means unlimited.
    max_queued_messages: int = Field(default=100_000, ge=0)
    persistence_location: str = "/var/lib/mosquitto/"
    log_dest: str = "syslog"
    registry: list[str] = Field(default_factory=lambda: ["registry"], min_length=1)
    #: Telemetry ingest workers: an observer's reads, plus the end-to-end acknowledgement (they write
    #: every device's ``acks`` and the retained ``ingest/capabilities``). Whoever writes a device's acks
    #: can make it delete unsent windows and events, so read-only services stay in ``observers``.
    ingest: list[str] = Field(default_factory=list)
    #: Read-only services (dashboards, an ingest that does not acknowledge).
    observers: list[str] = Field(default_factory=list)
    devices: list[DeviceEntry] = Field(default_factory=list)

    @field_validator("acl_file", "password_file", "persistence_location")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v, "a broker file path")

    @field_validator("registry", "ingest", "observers")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [_identity(n, "identity") for n in v]

    @field_validator("bind", "log_dest")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v or any(c in v for c in "\n\r"):
            raise ValueError("must be a non-empty single line")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BrokerSpec:
        try:
            Topics(self.topic_root, self.fleet)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from exc
        if self.auth == "password" and self.password_file is None:
            raise ValueError("auth = 'password' needs password_file")
        if self.auth == "mtls" and self.tls.crlfile is None:
            raise ValueError("auth = 'mtls' needs tls.crlfile: without a CRL a leaked device certificate stays valid")
        names = list(self.registry) + list(self.ingest) + list(self.observers) + [d.id for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"identities must be unique across registry, ingest, observers and devices: {dupes}")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_root, self.fleet)


def parse_spec(data: dict[str, Any], source: str = "broker spec") -> BrokerSpec:
    try:
        return BrokerSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "top level"
            problems.append(f"{loc}: {err['msg']}")
        raise SecurityError(f"{source} is invalid: " + "; ".join(problems)) from exc


def load_spec(path: Path) -> BrokerSpec:
    """Read a spec from ``.toml`` or ``.json``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read broker spec {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SecurityError(f"broker spec {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise SecurityError(f"broker spec {path} must be a table/object at the top level")
    return parse_spec(data, str(path))


# --- rendering -----------------------------------------------------------------------------------


def _template(name: str) -> Template:
    return Template(resources.files("firmware_configs").joinpath("deploy", name).read_text("utf-8"))


def _block(user: str, rules: list[tuple[str, str]]) -> str:
    return "\n".join([f"user {user}"] + [f"topic {access} {topic}" for access, topic in rules]) + "\n"


def acl_rules(spec: BrokerSpec) -> dict[str, list[tuple[str, str]]]:
    """identity -> [(access, topic filter)]: the ACL as data, for rendering and for tests."""
    t = spec.topics
    # partitioned telemetry ([telemetry] partitions): devices/<id>/telemetry/<p>, any partition
    all_partitions = f"{t.all_device_telemetry()}/+"
    registry = [
        ("readwrite", t.all_device_desired()),
        ("readwrite", t.all_device_shadow()),
        ("readwrite", t.all_group_desired()),
        ("readwrite", t.all_artifacts()),
        ("readwrite", t.trust_revocations()),
        ("readwrite", t.all_device_configs()),
        ("readwrite", t.all_group_configs()),
        ("read", t.all_device_config_states()),
        ("read", t.all_device_states()),
        ("read", t.all_device_online()),
        ("read", t.all_device_events()),
        ("read", t.all_device_telemetry()),
        ("read", all_partitions),
    ]
    observer = [
        ("read", t.all_device_states()),
        ("read", t.all_device_online()),
        ("read", t.all_device_events()),
        ("read", t.all_device_telemetry()),
        ("read", all_partitions),
    ]
    # write only: an ingest never needs to read acknowledgements (its own or another worker's), and
    # '+' matches one level, so this is every device's acks topic and nothing else
    ingest = [*observer, ("write", t.all_device_acks()), ("write", t.ingest_capabilities())]
    rules: dict[str, list[tuple[str, str]]] = {}
    for name in spec.registry:
        rules[name] = list(registry)
    for name in spec.ingest:
        rules[name] = list(ingest)
    for name in spec.observers:
        rules[name] = list(observer)
    for dev in spec.devices:
        rules[dev.id] = [
            ("read", t.device_desired(dev.id)),
            ("read", t.device_shadow(dev.id)),
            *[("read", t.group_desired(g)) for g in dev.groups],
            ("read", t.all_artifacts()),
            ("read", t.trust_revocations()),
            ("write", t.device_state(dev.id)),
            ("write", t.device_online(dev.id)),
            ("write", t.device_events(dev.id)),
            ("write", t.device_telemetry(dev.id)),
            ("write", f"{t.device_telemetry(dev.id)}/+"),  # its partition topic (one level, its own)
            # the end-to-end acknowledgement: its own acks only, and whether the ingest acknowledges
            ("read", t.device_acks(dev.id)),
            ("read", t.ingest_capabilities()),
            # signed remote configuration (docs/remote-config.md): its own and its groups' documents
            ("read", t.device_config(dev.id)),
            *[("read", t.group_config(g)) for g in dev.groups],
            ("write", t.device_config_state(dev.id)),
        ]
    return rules


def render_acl(spec: BrokerSpec) -> str:
    rules = acl_rules(spec)

    def blocks(names: list[str]) -> str:
        return "\n".join(_block(n, rules[n]) for n in names) or "# (none)\n"

    return _template("acl.template").substitute(
        fleet=spec.fleet,
        root=spec.topic_root,
        registry_blocks=blocks(list(spec.registry)),
        ingest_blocks=blocks(list(spec.ingest)),
        observer_blocks=blocks(list(spec.observers)),
        device_blocks=blocks([d.id for d in spec.devices]),
    )


def render_security(spec: BrokerSpec) -> str:
    """The listener, TLS, authentication and ACL part: what a test broker appends to its own base config."""
    if spec.auth == "password":
        global_auth = f"password_file {spec.password_file}\n"
        listener_auth = "require_certificate false\n"
    else:
        global_auth = ""
        listener_auth = (
            "# mTLS: a client certificate signed by cafile is required; its CN becomes the username.\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            f"crlfile {spec.tls.crlfile}\n"
        )
    return _template("mosquitto-security.conf.template").substitute(
        auth="password" if spec.auth == "password" else "client-certificate (mTLS)",
        acl_file=spec.acl_file,
        global_auth_lines=global_auth,
        max_packet_line=f"max_packet_size {spec.max_packet_size}\n" if spec.max_packet_size else "",
        max_queued=spec.max_queued_messages,
        port=spec.port,
        bind=spec.bind,
        tls_version=spec.tls_version,
        cafile=spec.tls.cafile,
        certfile=spec.tls.certfile,
        keyfile=spec.tls.keyfile,
        pin_client_id="true" if spec.pin_client_id else "false",
        listener_auth_lines=listener_auth,
    )


def render_mosquitto_conf(spec: BrokerSpec) -> str:
    """A complete production ``mosquitto.conf``: persistence, logging and the security part."""
    return _template("mosquitto.conf.template").substitute(
        persistence_location=spec.persistence_location,
        log_dest=spec.log_dest,
        security=render_security(spec),
    )


def write_broker_files(spec: BrokerSpec, out_dir: Path, *, full: bool = True) -> dict[str, Path]:
    """Write ``mosquitto.conf`` (complete, or only the security part with ``full=False``) and ``acl`` into
    ``out_dir``. Install the ACL where ``spec.acl_file`` says (they are the same file when out_dir is that
    directory)."""
    out = Path(out_dir)
    conf = out / "mosquitto.conf"
    acl = out / "acl"
    write_atomic(conf, (render_mosquitto_conf(spec) if full else render_security(spec)).encode())
    write_atomic(acl, render_acl(spec).encode(), mode=0o640)
    return {"mosquitto.conf": conf, "acl": acl}
