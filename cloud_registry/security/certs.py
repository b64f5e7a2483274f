"""X.509 building blocks for the broker's TLS: a CA, a server certificate, client certificates for devices
and registry identities, and a certificate revocation list (CRL).

Pure functions over ``cryptography`` objects: no files here (see :mod:`cloud_registry.security.pki`).
Keys are ECDSA P-256 with SHA-256 signatures, which every TLS stack on the fleet's devices speaks.

A client certificate's subject common name (CN) is the MQTT identity: Mosquitto's
``use_identity_as_username true`` turns it into the username that the ACL's ``%u`` patterns match, so a
device's CN must be its device id.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_registry.security.errors import SecurityError
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.topics import check_segment, check_unit

CertKind = Literal["server", "device", "registry", "observer"]

#: RFC 5280 upper bound of a common name
MAX_IDENTITY = 64


def check_identity(name: str, what: str = "identity", *, station: bool = False) -> str:
    """An MQTT identity (device id or registry name): a valid topic segment of at most 64 characters;
    with ``station``, a station's address ``<device>~<station>`` too (a station connects as itself:
    docs/stations.md)."""
    try:
        check_unit(name, what) if station else check_segment(name, what)
    except ProtocolError as exc:
        raise SecurityError(str(exc)) from exc
    if len(name) > MAX_IDENTITY:
        raise SecurityError(f"{what} {name!r} is longer than {MAX_IDENTITY} characters (an X.509 common name limit)")
    return name


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _base(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, valid_days: float, now: dt.datetime
) -> x509.CertificateBuilder:
    if valid_days <= 0:
        raise SecurityError("a certificate needs a positive validity (valid_days > 0)")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # a little backdating so a device whose clock runs slightly behind accepts a fresh certificate
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(
    key: ec.EllipticCurvePrivateKey, common_name: str, valid_days: float = 3650.0, now: dt.datetime | None = None
) -> x509.Certificate:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    t = now or _now()
    builder = (
        _base(name, name, key.public_key(), valid_days, t)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host) or "/" in host:
                raise SecurityError(f"invalid host name {host!r} for the server certificate") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    kind: CertKind,
    name: str,
    hosts: list[str] | None = None,
    valid_days: float = 365.0,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign a leaf certificate.

    * ``server``: CN ``name``, subject alternative names ``hosts`` (DNS names or IP addresses, at least
      one: clients check the broker's address against them), extended key usage serverAuth.
    * ``device`` / ``registry`` / ``observer``: CN = the MQTT identity, extended key usage clientAuth, and
      an organizational unit naming the kind (informational: the broker's ACL decides what it may do).
    """
    t = now or _now()
    if kind == "server":
        if not hosts:
            raise SecurityError("a server certificate needs at least one host name or IP address")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        eku = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        check_identity(name, f"{kind} identity", station=kind == "device")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        eku = ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _base(subject, ca_cert.subject, public_key, valid_days, t)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if kind == "server":
        builder = builder.add_extension(_san(list(hosts or [])), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: dt.datetime


def make_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: list[Revoked],
    *,
    number: int,
    valid_days: float = 90.0,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CA-signed CRL. Mosquitto refuses EVERY client once ``next_update`` has passed, so it must be
    re-issued (``edgeline broker cert crl``) well before ``valid_days`` run out."""
    t = now or _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(t - dt.timedelta(minutes=5))
        .next_update(t + dt.timedelta(days=valid_days))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for r in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


# --- PEM -------------------------------------------------------------------------------------------


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def load_key_pem(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"{what} is not a readable unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"{what} holds a {type(key).__name__}, expected an EC key")
    return key


def load_cert_pem(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise SecurityError(f"{what} is not a readable PEM certificate") from exc


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
