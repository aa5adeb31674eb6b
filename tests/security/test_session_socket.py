"""What a session's job can put at its socket's name, and the proxy's answer to each.

The job owns its run directory; the server (root) connects to whatever is there. Each test
plants one thing a hostile job could and checks it is refused before or at the connect:
a symlink (to a socket that does listen), a regular file, a FIFO, a socket of another uid,
and a socket of the owner's uid served by a process of another uid (swapped in after the
name was checked: only the peer's credentials tell). The real files and sockets are made as
root, since only root can give them away (chown); elsewhere the tests skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucenter.dispatch.isolation.safe_files import UnsafeFile
from gpucenter.domain.errors import Conflict
from gpucenter.domain.sessions import socket_name
from gpucenter.services.sessions.endpoint import Endpoint, _check_socket, connect_checked

OWNER = 399_991  # an id nobody has: only its number matters to the checks
SOCKET_NAME = socket_name(1)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A run directory of OWNER's, held open as the proxy holds it."""
    where = tmp_path / "job-1.run-1"
    where.mkdir()
    os.chown(where, OWNER, OWNER)
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield where, fd
    finally:
        os.close(fd)


def _listening(path: Path, uid: int) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    os.chown(path, uid, uid)
    return server


def test_an_owners_socket_passes_the_name_check(run_dir: tuple[Path, int]) -> None:
    where, fd = run_dir
    with _listening(where / SOCKET_NAME, OWNER):
        _check_socket(fd, SOCKET_NAME, OWNER, where)


def test_a_symlink_to_a_listening_socket_is_refused(
    run_dir: tuple[Path, int], tmp_path: Path
) -> None:
    where, fd = run_dir
    with _listening(tmp_path / "elsewhere.sock", OWNER):
        (where / SOCKET_NAME).symlink_to(tmp_path / "elsewhere.sock")
        with pytest.raises(UnsafeFile, match="not a socket"):
            _check_socket(fd, SOCKET_NAME, OWNER, where)


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_file_or_fifo_is_refused_without_being_opened(
    run_dir: tuple[Path, int], kind: str
) -> None:
    where, fd = run_dir
    path = where / SOCKET_NAME
    if kind == "file":
        path.write_text("GET / HTTP/1.1\r\n")
    else:
        os.mkfifo(path)  # opening it would block the proxy
    os.chown(path, OWNER, OWNER)
    with pytest.raises(UnsafeFile, match="not a socket"):
        _check_socket(fd, SOCKET_NAME, OWNER, where)


def test_another_uids_socket_is_refused(run_dir: tuple[Path, int]) -> None:
    where, fd = run_dir
    with (
        _listening(where / SOCKET_NAME, OWNER + 1),
        pytest.raises(UnsafeFile, match=f"uid {OWNER + 1}"),
    ):
        _check_socket(fd, SOCKET_NAME, OWNER, where)


def test_a_socket_served_by_another_uid_is_refused_at_the_connect(
    run_dir: tuple[Path, int],
) -> None:
    """The name looks right (a socket of the owner's) but root's process listens on it."""
    where, fd = run_dir
    with _listening(where / SOCKET_NAME, OWNER):
        _check_socket(fd, SOCKET_NAME, OWNER, where)  # passes: only the peer tells
        endpoint = Endpoint(1, fd, OWNER, "secret", "/sessions/1/app/")
        with pytest.raises(Conflict, match="served by uid 0"):
            connect_checked(endpoint)


def test_the_owners_own_server_is_reached(run_dir: tuple[Path, int]) -> None:
    """The same connect to a server that does run as the owner goes through (a child
    process that drops to OWNER and listens)."""
    _where, fd = run_dir
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become OWNER, listen, accept one connection
        try:
            os.close(ready_r)
            os.setgid(OWNER)
            os.setuid(OWNER)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # /tmp/pytest-of-root is root's 0700: reach the directory by its descriptor.
            server.bind(f"/proc/self/fd/{fd}/{SOCKET_NAME}")
            server.listen(1)
            os.write(ready_w, b"x")
            conn, _ = server.accept()
            conn.close()
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x"
        sock = connect_checked(Endpoint(1, fd, OWNER, "secret", "/sessions/1/app/"))
        sock.close()
    finally:
        os.close(ready_r)
        os.waitpid(pid, 0)
