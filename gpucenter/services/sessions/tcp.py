"""Reaching a session that listens on TCP on another machine: its address file, read so that
the job cannot steer it, and a TLS connection pinned to the certificate the job made.

Where a site's compute nodes are other machines (a Slurm site with ``sessions_over_tcp``),
the server cannot reach a Unix socket there. The job then listens on its node's address with
TLS and writes ``session-<job>.addr`` (`domain.sessions.address_name`) in its owner's
directory: host, port, its self-signed certificate and that certificate's SHA-256.

The job's owner controls that directory, and any tenant on the node can bind a free port, so:

1. the file is opened in the directory already opened without following links, with
   ``O_NOFOLLOW | O_NONBLOCK`` (a symlink fails, a FIFO does not block the server), and must be
   a regular file owned by the job's account and at most `MAX_ADDRESS` bytes; its JSON must
   name a host (an IP address or a host name), a port (1-65535), a certificate, and that
   certificate's SHA-256; anything else is refused (409), never guessed at;
2. the TLS client trusts that certificate and nothing else (no CA, no system store; the name
   is not checked: the certificate names the session, not the node): a server that cannot
   prove it holds the certificate's key (another tenant who took the port after the session
   ended, a planted process) fails the handshake, before any request, so the session's secret
   is never sent to it. The HTTP path also compares the presented certificate's SHA-256 with
   the pinned one before it writes anything.

What this does not protect: the port itself is open to everyone who can reach the node (other
tenants there included); they can connect, but every request needs the session's secret,
which only the proxy adds.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import socket
import ssl
import stat
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore

from gpucenter.dispatch.isolation.safe_files import UnsafeFile

__all__ = [
    "MAX_ADDRESS",
    "Address",
    "AddressMissing",
    "PinRefused",
    "PinnedBackend",
    "check_pin",
    "client_context",
    "connect_pinned",
    "parse_address",
    "read_address",
]

MAX_ADDRESS = 16 * 1024
"""An address file is small (a certificate of about 700 bytes): anything larger is refused."""
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AddressMissing(Exception):
    """No address file yet: the session's server has not started listening."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where a session listens on TCP and the certificate it must present."""

    host: str
    port: int
    sha256: str
    """The certificate's SHA-256 (of its DER form), lower-case hex."""
    cert_pem: str


def _valid_host(host: object) -> str | None:
    if not isinstance(host, str):
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host if _HOSTNAME.match(host) else None


def parse_address(raw: bytes) -> Address:
    """The address in an address file's bytes; ValueError saying what is wrong otherwise."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    host = _valid_host(data.get("host"))
    if host is None:
        raise ValueError("host is not an IP address or a host name")
    port = data.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError("port is not a number from 1 to 65535")
    digest, pem = data.get("sha256"), data.get("cert")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ValueError("sha256 is not a SHA-256 in hex")
    if not isinstance(pem, str):
        raise ValueError("cert is missing")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise ValueError("cert is not a PEM certificate") from None
    if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), digest):
        raise ValueError("cert does not match sha256")
    return Address(host, port, digest, pem)


def read_address(dir_fd: int, name: str, owner: int) -> Address:
    """The address file `name` in the directory `dir_fd`, checked (see the module's docstring):
    AddressMissing when there is none yet, UnsafeFile when it is refused."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise AddressMissing(name) from None
    except OSError as exc:  # ELOOP: a symlink
        raise UnsafeFile(name, f"cannot be opened as a file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(name, "is not a regular file (a FIFO, a device, a directory)")
        if st.st_uid != owner:
            raise UnsafeFile(name, f"belongs to uid {st.st_uid}, not {owner}")
        if st.st_size > MAX_ADDRESS:
            raise UnsafeFile(name, f"is larger than {MAX_ADDRESS} bytes")
        raw = os.read(fd, MAX_ADDRESS + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_ADDRESS:
        raise UnsafeFile(name, f"is larger than {MAX_ADDRESS} bytes")
    try:
        return parse_address(raw)
    except ValueError as exc:
        raise UnsafeFile(name, str(exc)) from None


def client_context(address: Address) -> ssl.SSLContext:
    """A TLS client context that trusts the session's own certificate only (its pin)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the certificate names the session, not the node
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=address.cert_pem)
    return context


class PinRefused(Exception):
    """The server at the address did not present the session's certificate."""


def check_pin(der: bytes | None, address: Address) -> None:
    """Refuse a TLS peer whose certificate is not the pinned one (a second check beside the
    context's trust: it names the reason, and holds if the context were ever loosened)."""
    if der is None or not hmac.compare_digest(hashlib.sha256(der).hexdigest(), address.sha256):
        raise PinRefused("the peer's certificate is not the session's")


def connect_pinned(address: Address, timeout: float = 5.0) -> socket.socket:
    """A plain TCP socket connected to the session, for a client that adds the TLS itself
    with `client_context` (the WebSocket's). Nothing is sent on it here."""
    return socket.create_connection((address.host, address.port), timeout=timeout)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for one TCP session: each connection is TLS with the pinned
    certificate, checked before the pool writes a request (the pool speaks plain HTTP over it)."""

    def __init__(self, address: Address) -> None:
        self._address = address
        self._context = client_context(address)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        # Wherever the pool was pointed, only the session's address is reached.
        stream = await self._inner.connect_tcp(self._address.host, self._address.port, timeout)
        try:
            secure = await stream.start_tls(self._context, server_hostname=None, timeout=timeout)
        except BaseException:
            await stream.aclose()
            raise
        try:
            tls = secure.get_extra_info("ssl_object")
            check_pin(tls.getpeercert(binary_form=True) if tls is not None else None, self._address)
        except BaseException:
            await secure.aclose()
            raise
        return secure

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("this session is reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
