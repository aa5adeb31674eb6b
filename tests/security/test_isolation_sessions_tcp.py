"""A session on a multi-host site (listening on TCP with TLS on its node) against an impostor
and a job that steers its address file: the secret goes only to the server holding the
session's own certificate, the address file is read as carefully as the socket is, and
another tenant gets 404.

The session's server here is a small TLS server in the test (JupyterLab through real Slurm
is in tests/slurm/test_slurm_session_tcp.py); the site is a Slurm dispatcher with
``sessions_over_tcp``, which is what makes the proxy read the address file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.websockets import WebSocketDisconnect

from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.domain.sessions import address_name, kind_named
from gpucenter.persistence.tables import JobRow
from gpucenter.services.sessions import endpoint
from gpucenter.services.sessions import manage as sessions
from gpucenter.services.sessions.secret import session_key, session_token
from tests.factories import wait_until
from tests.security.conftest import Env
from tests.security.test_isolation_sessions import _signed_in

OWNER_UID = 4242  # the session's Unix account (only its uid matters here)
STRANGER_UID = 4343

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="files owned by other uids need root")


@dataclass
class Cert:
    pem: str
    key: bytes
    sha256: str


def _cert() -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpucenter-session-1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Cert(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        hashlib.sha256(der).hexdigest(),
    )


@dataclass
class TlsServer:
    """Answers every HTTP request with 200 and keeps what it received (after TLS)."""

    cert: Cert
    tmp: Path
    received: list[bytes] = field(default_factory=list)
    handshake_failures: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        crt, key = (
            self.tmp / f"{self.cert.sha256[:8]}.crt",
            self.tmp / f"{self.cert.sha256[:8]}.key",
        )
        crt.write_text(self.cert.pem)
        key.write_bytes(self.cert.key)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(crt, key)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                tls = self._context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshake_failures += 1
                conn.close()
                continue
            data = b""
            try:
                tls.settimeout(5)
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                body = b'{"ok": true}'
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
            except (ssl.SSLError, OSError):
                pass
            finally:
                tls.close()

    def close(self) -> None:
        self._sock.close()


@dataclass
class TcpSession:
    job_id: int
    run_dir: Path
    token: str
    url: str

    def write_address(self, cert: Cert, port: int, **change: object) -> Path:
        data: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "sha256": cert.sha256,
            "cert": cert.pem,
        }
        path = self.run_dir / address_name(self.job_id)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text(json.dumps(data | change))
        os.chown(path, OWNER_UID, OWNER_UID)
        return path


@pytest.fixture
def tcp_session(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TcpSession]:
    """alice's session, RUNNING, its working directory hers, on a site whose sessions listen
    on TCP (a Slurm dispatcher with sessions_over_tcp)."""
    on = env.ctx.settings.model_copy(update={"session_python": sys.executable})
    monkeypatch.setattr(env.ctx, "settings", on)
    monkeypatch.setattr(
        env.ctx, "dispatcher", SlurmDispatcher(tmp_path / "slurm-logs", sessions_over_tcp=True)
    )
    # The test site's nodes stand for this machine: they resolve to 127.0.0.1 here (what
    # DNS says of a real site's nodes), where the test's TLS servers listen.
    monkeypatch.setattr(endpoint, "node_addresses", lambda names: frozenset(names) | {"127.0.0.1"})
    job = sessions.start(env.ctx, env.centre.alice, kind_named("jupyterlab"), "alpha", 1, "1h")
    jobs_root = on.tenant_root.resolve() / "jobs"
    jobs_root.mkdir(parents=True, exist_ok=True)
    run_dir = jobs_root / f"run-{job.id}"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, OWNER_UID, OWNER_UID)
    with env.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, job.id)
        row.state = "RUNNING"
        row.stdout_path = str(run_dir / "stdout.log")
    token = session_token(session_key(on), job.id)
    yield TcpSession(job.id, run_dir, token, f"/sessions/{job.id}/app/api/status")


def test_the_owner_reaches_the_session_over_pinned_tls_and_another_tenant_gets_404(
    env: Env, tcp_session: TcpSession, tmp_path: Path
) -> None:
    cert = _cert()
    server = TlsServer(cert, tmp_path)
    try:
        tcp_session.write_address(cert, server.port)
        alice = _signed_in(env, "alice")
        answer = alice.get(tcp_session.url)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ok": True}
        assert len(server.received) == 1
        request = server.received[0].decode("latin-1").lower()
        assert f"authorization: token {tcp_session.token}" in request
        assert "cookie" not in request  # the portal's sign-in stays in the portal

        bob = _signed_in(env, "bob")
        assert bob.get(tcp_session.url).status_code == 404
        with (
            pytest.raises(WebSocketDisconnect),
            bob.websocket_connect(
                f"wss://testserver/sessions/{tcp_session.job_id}/app/api/events/subscribe"
            ),
        ):
            pass
        assert len(server.received) == 1  # nothing of bob's reached the session
    finally:
        server.close()


def test_an_impostor_on_the_port_is_refused_and_never_sees_the_secret(
    env: Env, tcp_session: TcpSession, tmp_path: Path
) -> None:
    """Another tenant took the session's port (after it ended, say) with a certificate of its
    own: the handshake fails, the proxy answers 409, and no request reaches the impostor."""
    session_cert, impostor_cert = _cert(), _cert()
    impostor = TlsServer(impostor_cert, tmp_path)
    genuine = TlsServer(session_cert, tmp_path)
    try:
        tcp_session.write_address(session_cert, impostor.port)
        alice = _signed_in(env, "alice")
        answer = alice.get(tcp_session.url)
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "error.session_certificate"
        with (
            pytest.raises(WebSocketDisconnect),
            alice.websocket_connect(
                f"wss://testserver/sessions/{tcp_session.job_id}/app/api/events/subscribe"
            ),
        ):
            pass
        wait_until(lambda: impostor.handshake_failures >= 2, timeout=5, step=0.1)
        assert impostor.received == []  # no request at all, so no secret
        assert not any(tcp_session.token.encode() in r for r in impostor.received)

        # The server is fine: the genuine server is reached as soon as the file names it.
        tcp_session.write_address(session_cert, genuine.port)
        assert alice.get(tcp_session.url).status_code == 200
    finally:
        impostor.close()
        genuine.close()


def _symlink(session: TcpSession, good: Path) -> None:
    target = session.run_dir / "elsewhere.addr"
    good.rename(target)
    os.symlink(target, good)


def _fifo(session: TcpSession, good: Path) -> None:
    good.unlink()
    os.mkfifo(good, 0o600)
    os.chown(good, OWNER_UID, OWNER_UID)


def _strangers(session: TcpSession, good: Path) -> None:
    os.chown(good, STRANGER_UID, STRANGER_UID)


def _garbage(session: TcpSession, good: Path) -> None:
    good.write_bytes(b"\x00{not json")


def _huge(session: TcpSession, good: Path) -> None:
    data = json.loads(good.read_text())  # valid, but padded past the bound
    good.write_text(json.dumps(data | {"pad": "x" * 100_000}))


def _other_cert(session: TcpSession, good: Path) -> None:
    data = json.loads(good.read_text())
    data["cert"] = _cert().pem  # a certificate that is not the one the digest names
    good.write_text(json.dumps(data))


def _bad(key: str, value: object) -> object:
    def change(session: TcpSession, good: Path) -> None:
        data = json.loads(good.read_text())
        data[key] = value
        good.write_text(json.dumps(data))

    return change


CASES = {
    "symlink": _symlink,
    "fifo": _fifo,
    "another user's file": _strangers,
    "garbage": _garbage,
    "too large": _huge,
    "certificate not the digest's": _other_cert,
    "port 0": _bad("port", 0),
    "port 65536": _bad("port", 65536),
    "port as text": _bad("port", "443"),
    "host with a space": _bad("host", "a b"),
    "host as a list": _bad("host", ["127.0.0.1"]),
    "host not a node of the site": _bad("host", "192.0.2.7"),  # a probe of another machine
    "digest not hex": _bad("sha256", "z" * 64),
}


@pytest.mark.parametrize("steer", list(CASES.values()), ids=list(CASES))
def test_a_steered_address_file_is_refused_and_the_server_stays_healthy(
    env: Env, tcp_session: TcpSession, tmp_path: Path, steer: object
) -> None:
    cert = _cert()
    server = TlsServer(cert, tmp_path)
    try:
        good = tcp_session.write_address(cert, server.port)
        steer(tcp_session, good)  # type: ignore[operator]
        alice = _signed_in(env, "alice")
        answer = alice.get(tcp_session.url)
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "error.session_address_refused"
        assert server.received == []
        assert env.client.get("/healthz").status_code == 200
        tcp_session.write_address(cert, server.port)
        assert alice.get(tcp_session.url).status_code == 200  # and the session still works
    finally:
        server.close()


def test_no_address_file_yet_is_starting(env: Env, tcp_session: TcpSession) -> None:
    alice = _signed_in(env, "alice")
    answer = alice.get(tcp_session.url)
    assert answer.status_code == 409
    assert answer.json()["code"] == "error.session_starting"


def test_the_slurm_dispatcher_tells_only_a_session_to_listen_on_tcp(tmp_path: Path) -> None:
    from gpucenter.core import NodeGpus
    from gpucenter.dispatch.base import JobOwner
    from gpucenter.domain.sessions import TCP_VARIABLE, TOKEN_VARIABLE
    from gpucenter.services.scheduling.launch import launch_request

    row = JobRow(
        id=5,
        project_id=1,
        user_id=1,
        name="s",
        command="true",
        gpu_type="h100",
        gpus_per_node=1,
        nodes=1,
        time_limit_s=600,
        env={},
        qos="normal",
        template="session:jupyterlab",
        runs=0,
    )
    place = (NodeGpus("n1", (0,)),)
    key = b"k" * 32
    session = launch_request(row, "p", JobOwner("ann"), place, session_key=key)
    assert TOKEN_VARIABLE in session.env and TCP_VARIABLE not in session.env
    over = SlurmDispatcher(tmp_path, sessions_over_tcp=True)
    plain = SlurmDispatcher(tmp_path)
    assert over._environment(session)[TCP_VARIABLE] == "1"
    assert TCP_VARIABLE not in plain._environment(session)
    row.template = None
    ordinary = launch_request(row, "p", JobOwner("ann"), place, session_key=key)
    assert TCP_VARIABLE not in over._environment(ordinary)


def test_a_sites_node_names_resolve_to_the_addresses_allowed() -> None:
    allowed = endpoint.node_addresses(["localhost", "no-such-node.invalid"])
    assert "127.0.0.1" in allowed and "localhost" in allowed
    assert "192.0.2.7" not in allowed
