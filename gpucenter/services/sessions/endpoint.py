"""Reaching a running session: its socket, found and connected so that the job cannot steer it.

The session's job owns its run directory and can put anything at the socket's name: a
symlink to another tenant's socket or to a root service's (munge, the database), a regular
file, a FIFO. The server (root on a multi-tenant site) therefore:

1. opens the run directory below the site's job root without following any link
   (`open_dir_beneath`), and takes its owner as the job's Unix account, as log reads do;
2. ``lstat``-s the socket's name in that directory: it must be a socket owned by that account
   (a symlink, a file, a FIFO or someone else's socket is refused, 409);
3. connects through ``/proc/self/fd/<dir>/session.sock`` (short, whatever the run directory's
   length: Unix socket paths are limited to 107 bytes, and the name is resolved in the
   directory already opened) and checks the peer's credentials (``SO_PEERCRED``): the process
   that accepted must run as the job's account, so a name swapped between the check and the
   connect still reaches nobody else.

Sessions are reached this way where their working directory is on this host: a local site's
run directory, or a Slurm site's log directory when the compute node is the server's host. On a
site whose nodes are other machines (``sessions_over_tcp``), the same directory holds the
session's address file instead, read as carefully, and the session is reached over TCP with
TLS pinned to the certificate it names (`tcp`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpcore

from gpucenter.auth.permissions import Caller
from gpucenter.dispatch.isolation.safe_files import UnsafeFile, open_dir_beneath
from gpucenter.domain.errors import Conflict
from gpucenter.domain.jobs import JobState
from gpucenter.domain.messages import msg
from gpucenter.domain.sessions import address_name, base_url, socket_name
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.manage import owner_uid
from gpucenter.services.sessions.manage import access_row
from gpucenter.services.sessions.secret import session_key, session_token
from gpucenter.services.sessions.tcp import Address, AddressMissing, PinnedBackend, read_address
from gpucenter.services.sites.runtime import SiteRuntime

__all__ = [
    "CheckedBackend",
    "Endpoint",
    "check_peer",
    "connect_checked",
    "http_pool",
    "open_endpoint",
    "over_tcp",
]

_PEERCRED = struct.Struct("3i")


@dataclass(slots=True)
class Endpoint:
    """A session the caller may use, its run directory held open: close it when done."""

    job_id: int
    dir_fd: int
    owner_uid: int
    token: str
    prefix: str
    address: Address | None = None
    """Where the session listens on TCP (a multi-host site); None: its Unix socket."""

    @property
    def socket_path(self) -> str:
        return f"/proc/self/fd/{self.dir_fd}/{socket_name(self.job_id)}"

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


def _check_socket(dir_fd: int, name: str, owner: int, where: Path) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise Conflict.of(msg("error.session_starting")) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeFile(where / name, "is not a socket (a link, file or FIFO)")
    if st.st_uid != owner:
        raise UnsafeFile(where / name, f"belongs to uid {st.st_uid}, not {owner}")


def _open_run_dir(ctx: AppContext, row: JobRow, run_dir: Path) -> tuple[int, int]:
    """The session's working directory, opened without following links, and its owner.

    Below a local site's job root: its run directory, whose owner is the job's account (the
    parent is root's, so the job cannot swap it). Elsewhere (a Slurm site's log directory on
    this host): the owner's directory below the site's root-owned log directory, which must
    belong to the job owner's uid, never root's or the server's (a shared directory would let
    anyone plant the socket)."""
    jobs_root = ctx.settings.tenant_root.resolve() / "jobs"
    root = jobs_root if jobs_root in run_dir.parents else run_dir.parent
    fd = open_dir_beneath(run_dir, root=root)
    try:
        owner = os.fstat(fd).st_uid
        if root != jobs_root:
            expected = owner_uid(ctx, row)
            if expected is None or owner != expected or owner in (0, os.geteuid()):
                raise UnsafeFile(run_dir, f"belongs to uid {owner}, not the session's owner")
    except BaseException:
        os.close(fd)
        raise
    return fd, owner


def _site_of(ctx: AppContext, row: JobRow) -> SiteRuntime | None:
    """The site holding the node the session runs on (the only site, failing that)."""
    nodes = {p.get("node") for p in row.placement or [] if isinstance(p, dict)}
    runtimes = ctx.site_runtimes()
    for runtime in runtimes:
        if nodes & {n.name for n in runtime.loaded.site.nodes}:
            return runtime
    return runtimes[0] if len(runtimes) == 1 else None


def over_tcp(ctx: AppContext, row: JobRow) -> bool:
    """Whether the session in `row` listens on TCP: its site's dispatcher says its sessions
    do (`SiteCapabilities.sessions_over_tcp`). The site is the one holding the node it runs
    on; the job's own files never decide it."""
    runtime = _site_of(ctx, row)
    return runtime is not None and runtime.dispatcher.capabilities.sessions_over_tcp


_NODE_ADDRESSES_TTL_S = 300.0
_resolved: dict[str, tuple[float, frozenset[str]]] = {}


def _addresses_of(name: str, now: float) -> frozenset[str]:
    """What node `name` resolves to, cached a few minutes per name: nodes and their
    addresses change rarely, and a site's node set changing must not resolve every node
    again."""
    cached = _resolved.get(name)
    if cached is not None and now - cached[0] < _NODE_ADDRESSES_TTL_S:
        return cached[1]
    found: frozenset[str] = frozenset()
    with contextlib.suppress(OSError, UnicodeError):
        found = frozenset(str(info[4][0]) for info in socket.getaddrinfo(name, None))
    _resolved[name] = (now, found)
    return found


def node_addresses(names: Sequence[str]) -> frozenset[str]:
    """The site's node names and every address they resolve to."""
    now = time.monotonic()
    found = set(names)
    for name in names:
        found |= _addresses_of(name, now)
    return frozenset(found)


def _check_host(ctx: AppContext, row: JobRow, address: Address) -> None:
    """The address file may name one of the session's site's nodes only: the file is its
    owner's to write, and without this check they could make the server open connections to
    any host and port it reaches (a database, another site's service) and learn from the
    answer whether something listens there. Nothing is sent before the certificate pin
    holds, but the probe itself is refused."""
    runtime = _site_of(ctx, row)
    names = [n.name for n in runtime.loaded.site.nodes] if runtime is not None else []
    if address.host not in node_addresses(names):
        raise UnsafeFile(Path(address_name(row.id)), f"{address.host} is not a node of the site")


def open_endpoint(ctx: AppContext, caller: Caller, job_id: int) -> Endpoint:
    """The running session `job_id` if `caller` may use it (NotFound otherwise); Conflict
    when it is not running or its socket (or address file) is not safe to use."""
    row = access_row(ctx, caller, job_id)
    if row.state != JobState.RUNNING.value or not row.stdout_path:
        raise Conflict.of(msg("error.session_not_running", job=job_id))
    run_dir = Path(os.path.normpath(row.stdout_path)).parent
    try:
        fd, owner = _open_run_dir(ctx, row, run_dir)
    except OSError:
        raise Conflict.of(msg("error.session_dir_unsafe", job=job_id)) from None
    address, tcp = None, over_tcp(ctx, row)
    try:
        if tcp:
            address = read_address(fd, address_name(job_id), owner)
            _check_host(ctx, row, address)
        else:
            _check_socket(fd, socket_name(job_id), owner, run_dir)
    except AddressMissing:
        os.close(fd)
        raise Conflict.of(msg("error.session_starting")) from None
    except UnsafeFile as exc:
        os.close(fd)
        code = "error.session_address_refused" if tcp else "error.session_socket_refused"
        raise Conflict.of(msg(code, job=job_id, why=str(exc))) from None
    except BaseException:
        os.close(fd)
        raise
    token = session_token(session_key(ctx.settings), job_id)
    return Endpoint(job_id, fd, owner, token, base_url(job_id), address)


def check_peer(sock: socket.socket, uid: int) -> None:
    """Refuse a connection whose listening process does not run as `uid`."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, peer_uid, _gid = _PEERCRED.unpack(raw)
    if peer_uid != uid:
        raise Conflict.of(msg("error.session_peer", uid=peer_uid))


def connect_checked(endpoint: Endpoint) -> socket.socket:
    """A connected, non-blocking socket to the session, its peer checked (WebSockets)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(endpoint.socket_path)
        check_peer(sock, endpoint.owner_uid)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for one session: every connection's peer is checked."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("sessions are reached by their Unix socket only")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(self._endpoint.socket_path, timeout)
        sock = stream.get_extra_info("socket")
        try:
            if not isinstance(sock, socket.socket):
                raise Conflict.of(msg("error.session_no_socket"))
            check_peer(sock, self._endpoint.owner_uid)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def http_pool(endpoint: Endpoint) -> httpcore.AsyncConnectionPool:
    """A connection pool that reaches only this session (one per proxied request): by its
    Unix socket, or over TCP with TLS pinned to its certificate."""
    if endpoint.address is not None:
        return httpcore.AsyncConnectionPool(
            network_backend=PinnedBackend(endpoint.address), max_connections=1
        )
    return httpcore.AsyncConnectionPool(
        uds=endpoint.socket_path, network_backend=CheckedBackend(endpoint), max_connections=1
    )
