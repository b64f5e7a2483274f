"""The test CA, certificates, CRL, and Mosquitto-compatible password hashes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_registry.security import certs
from cloud_registry.security.errors import SecurityError
from cloud_registry.security.passwords import (
    PasswordFile,
    hash_password,
    parse_password_file,
    verify_password,
)
from cloud_registry.security.pki import Pki


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_leaf_certificates(pki: Pki) -> None:
    ca = load(pki.ca_cert_path)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    dev = load(pki.cert_path("device", "dev-a"))
    dev.verify_directly_issued_by(ca)
    assert certs.common_name(dev) == "dev-a"
    assert not dev.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = dev.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    server = load(pki.cert_path("server", "broker"))
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (pki.key_path("device", "dev-a").stat().st_mode & 0o077) == 0
    assert (pki.ca_key_path.stat().st_mode & 0o077) == 0


def test_revocation_goes_into_a_signed_crl(pki: Pki) -> None:
    serial = next(r.serial for r in pki.records() if r.name == "dev-b")
    done = pki.revoke("dev-b")
    assert [r.serial for r in done] == [serial]
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.is_signature_valid(load(pki.ca_cert_path).public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    still_valid = next(r.serial for r in pki.records() if r.name == "dev-a")
    assert crl.get_revoked_certificate_by_serial_number(int(still_valid, 16)) is None
    with pytest.raises(SecurityError, match="no unrevoked certificate"):
        pki.revoke("dev-b")


def test_identity_rules(pki: Pki) -> None:
    for bad in ("a/b", "dev+", "#", "", "x" * 65, "späť"):
        with pytest.raises(SecurityError):
            pki.issue("device", bad)
    with pytest.raises(SecurityError, match="already a registry identity"):
        pki.issue("device", "registry")
    with pytest.raises(SecurityError, match="at least one host"):
        pki.issue("server", "broker2", hosts=[])
    with pytest.raises(SecurityError, match="invalid host"):
        pki.issue("server", "broker2", hosts=["bad host"])
    with pytest.raises(SecurityError, match="positive validity"):
        pki.issue("device", "dev-c", valid_days=0)


def test_damaged_pki_gives_clear_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="no CA"):
        Pki.open(tmp_path / "nowhere")
    with pytest.raises(SecurityError, match="exists"):
        Pki.init(pki.directory)
    pki.index_path.write_text('{"ca_subject": 1, "surprise": true}')
    with pytest.raises(SecurityError, match="malformed"):
        pki.issue("device", "dev-c")
    other = Pki.init(tmp_path / "other")
    shutil.copy(other.ca_key_path, pki.ca_key_path)  # a key that does not belong to ca.crt
    pki2 = Pki.init(tmp_path / "third")
    shutil.copy(other.ca_key_path, pki2.ca_key_path)
    with pytest.raises(SecurityError, match="does not belong"):
        pki2.issue("device", "dev-c")
    pki2.ca_key_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated")
    with pytest.raises(SecurityError, match="not a readable"):
        pki2.issue("device", "dev-c")
    pki2.ca_key_path.unlink()
    with pytest.raises(SecurityError, match="missing"):
        pki2.issue("device", "dev-c")


# --- passwords -------------------------------------------------------------------------------------


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hashes are what mosquitto_passwd writes: it and we verify each other's output."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.fail("mosquitto_passwd is not installed (it ships with the mosquitto package)")
    f = tmp_path / "pw"
    subprocess.run([tool, "-b", "-c", str(f), "alice", "s3cret pass"], check=True, capture_output=True)
    encoded = parse_password_file(f.read_text())["alice"]
    assert encoded.startswith("$7$")
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pasS", encoded)
    _, _, iterations, salt_b64, _ = encoded.split("$")
    import base64

    ours = hash_password("s3cret pass", iterations=int(iterations), salt=base64.b64decode(salt_b64))
    assert ours == encoded  # byte for byte


def test_password_file_roundtrip_and_bad_input(tmp_path: Path) -> None:
    pf = PasswordFile(tmp_path / "passwd")
    pf.set("dev-a", "pa", iterations=1000)
    pf.set("dev-b", "pb", iterations=1000)
    assert pf.usernames() == ["dev-a", "dev-b"]
    assert pf.check("dev-a", "pa") and not pf.check("dev-a", "pb") and not pf.check("nobody", "pa")
    assert (pf.path.stat().st_mode & 0o077) == 0
    assert pf.delete("dev-a") and not pf.delete("dev-a")
    with pytest.raises(SecurityError, match="empty"):
        pf.set("dev-c", "")
    with pytest.raises(SecurityError):
        pf.set("bad:name", "x")
    pf.path.write_text("dev-x:plaintext\n")
    with pytest.raises(SecurityError, match="plain-text"):
        pf.load()
    pf.path.write_text("a:$7$1$AAAA$BBBB\na:$7$1$AAAA$BBBB\n")
    with pytest.raises(SecurityError, match="twice"):
        pf.load()
    with pytest.raises(SecurityError, match="not a \\$7\\$"):
        verify_password("x", "$6$abc$def")
    with pytest.raises(SecurityError, match="base64"):
        verify_password("x", "$7$10$!!!!$????")
    with pytest.raises(SecurityError, match="base64"):
        verify_password("x", "$7$10$ÄÄÄÄ$AAAA")
    with pytest.raises(SecurityError, match="out of range"):
        verify_password("x", "$7$999999999$AAAA$AAAA")  # a planted hash must not pin the CPU


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_password_file_parser_raises_only_its_own_error(text: str) -> None:
    try:
        users = parse_password_file(text)
    except SecurityError:
        return
    for user, encoded in users.items():
        assert user and encoded.startswith("$")
        with contextlib.suppress(SecurityError):
            verify_password("x", encoded)
