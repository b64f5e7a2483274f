"""The OPC UA application certificate of the device, made with ``cryptography`` (as the project's
broker PKI makes its certificates): RSA 2048, SHA-256, the application URI in subjectAltName (OPC UA
Part 6 requires it), key usages for Sign&Encrypt, client and server authentication. Made once in the
PKI directory and kept; a certificate and key given in the config are used instead."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeline.core.fsutil import write_atomic

VALID_DAYS = 3650


def make_certificate(application_uri: str, common_name: str, hosts: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A self-signed application instance certificate: (certificate PEM, private key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeline"),
        ]
    )
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for h in hosts or (socket.gethostname(), "localhost"):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(pki_dir: Path, application_uri: str, common_name: str) -> tuple[Path, Path]:
    """The device's certificate and key in ``pki_dir`` (``server.crt``, ``server.key`` 0600), made on
    first use."""
    crt, key = pki_dir / "server.crt", pki_dir / "server.key"
    if crt.is_file() and key.is_file():
        return crt, key
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = make_certificate(application_uri, common_name)
    write_atomic(key, key_pem, mode=0o600)
    write_atomic(crt, cert_pem)
    return crt, key
