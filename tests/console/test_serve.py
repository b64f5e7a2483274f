"""``edgeline console serve`` as its own process: HTTPS with the certificate it is given (a client
that trusts the CA gets the pages and a Secure cookie; plain HTTP on that port gets nothing; a client
that trusts no one refuses the certificate), no bind beyond loopback without TLS, and plain HTTP
beyond loopback only when explicitly allowed (with cookies a browser can send back over HTTP)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from cloud_registry.security.pki import IssuedFiles, Pki
from edgeline.cli.main import cli
from edgeline.console.server import Bind, cookies_secure
from edgeline.demo.broker import free_port, wait_port
from tests.console.conftest import Home


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> IssuedFiles:
    pki = Pki.init(tmp_path_factory.mktemp("pki"), common_name="console test CA")
    return pki.issue("server", "localhost", hosts=["localhost", "127.0.0.1"])


def serve(home: Home, *args: str, command: tuple[str, ...] = ("console", "serve")) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edgeline.cli.main", *command, "--home", str(home.path)]
    cmd += ["--broker-port", str(free_port()), "--keys", str(home.key_dir), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


@pytest.fixture
def running(home: Home) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def started(p: subprocess.Popen[bytes], port: int) -> None:
    if not wait_port("127.0.0.1", port, 20.0):
        p.kill()
        _, err = p.communicate(timeout=5)
        pytest.fail(f"the console did not listen on {port}: {err.decode(errors='replace')[-2000:]}")


def test_serves_https_with_the_given_certificate(
    home: Home, server_cert: IssuedFiles, running: list[subprocess.Popen[bytes]]
) -> None:
    home.registry.close()  # the console process opens the store itself
    port = free_port()
    p = serve(
        home,
        "--bind",
        f"127.0.0.1:{port}",
        "--https-cert-file",
        str(server_cert.cert),
        "--https-key-file",
        str(server_cert.key),
    )
    running.append(p)
    started(p, port)
    trusting = ssl.create_default_context(cafile=str(server_cert.ca))
    r = httpx.get(f"https://localhost:{port}/login", verify=trusting, timeout=10)
    assert r.status_code == 200 and "edgeline console" in r.text
    cookie = r.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://localhost:{port}/login", verify=ssl.create_default_context(), timeout=10)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: no page
        httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
    assert p.poll() is None


def test_refuses_to_serve_beyond_loopback_without_tls(home: Home, server_cert: IssuedFiles) -> None:
    runner = CliRunner()
    args = ["console", "serve", "--home", str(home.path), "--bind", "0.0.0.0:8443"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1 and "refusing to serve on 0.0.0.0 without TLS" in r.output, r.output
    r = runner.invoke(cli, [*args, "--https-cert-file", str(server_cert.cert)])
    assert r.exit_code == 2 and "go together" in r.output
    r = runner.invoke(cli, ["console", "serve", "--bind", "nonsense"])
    assert r.exit_code == 1 and "HOST:PORT" in r.output
    r = runner.invoke(cli, ["console", "--home", str(home.path), "--bind", "10.1.2.3:443"])  # serve by default
    assert r.exit_code == 1 and "refusing to serve on 10.1.2.3 without TLS" in r.output
    r = runner.invoke(cli, ["console", "--help"])
    assert r.exit_code == 0 and "serve" in r.output and "user" in r.output


def test_plain_http_beyond_loopback_only_when_allowed(home: Home, running: list[subprocess.Popen[bytes]]) -> None:
    home.registry.close()
    port = free_port("0.0.0.0")
    p = serve(home, "--bind", f"0.0.0.0:{port}", "--allow-plain-http", command=("console",))  # serve by default
    running.append(p)
    started(p, port)
    r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=10)
    assert r.status_code == 200
    assert "Secure" not in r.headers["set-cookie"]  # a browser would never send a Secure cookie back over http
    assert not cookies_secure(Bind.parse(f"0.0.0.0:{port}"), None) and cookies_secure(Bind.parse("[::1]:1"), None)
    p.terminate()
    _, err = p.communicate(timeout=10)
    assert b"serving plain HTTP on 0.0.0.0" in err
