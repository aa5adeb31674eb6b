"""Files the server touches on a job's behalf, handled so that the job cannot steer them.

The server runs as root on a multi-tenant site, and a job owns its output directory. Anything
the job can write, it can replace between two of the server's steps: a log file becomes a
symlink to ``/etc/munge/munge.key`` (root reads it and hands it back through the log API), a
FIFO (an open() for reading blocks forever and with it every route), a hard link to a
root-owned file, a device node. A shared world-writable (1777) output directory adds planted
files and symlinks that capture or redirect *another* user's output. So:

- **Reading** (`read_tail`): each path component below a trusted root is opened with
  ``O_NOFOLLOW`` relative to its parent's descriptor (a swapped directory is refused, not
  followed); the file itself is ``lstat``-ed first so a FIFO or device is never even opened,
  then opened ``O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`` and ``fstat``-ed again: it must still be
  the same inode, a regular file, owned by the expected uid. At most `max_bytes` are read from
  the end: a job cannot make the server read gigabytes, and regular files never block.
- **Creating** (`make_owned_dir`, `create_owned_file`, `prepare_job_output`): parents must be
  directories owned by root (or the server's own uid) and writable by nobody else, so nobody
  else can plant anything in them; new entries are made with ``mkdir``/``O_EXCL|O_NOFOLLOW``
  so that whatever already exists under the name is detected rather than reused, and a job's
  output directory is handed to its owner (``fchown``) only after the server has created the
  files it will open itself.
- **Server state** (`ensure_private_dir`, `ensure_private_file`, `write_private_file`):
  0700 directories and 0600 files owned by the server, written atomically.

Linux semantics (``O_NOFOLLOW`` on the last component, ``dir_fd`` relative opens); only the
standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_TAIL_BYTES",
    "JobOutput",
    "Tail",
    "UnsafeFile",
    "append_to_owned_file",
    "create_owned_file",
    "ensure_private_dir",
    "ensure_private_file",
    "make_owned_dir",
    "open_dir_beneath",
    "owner_of_dir",
    "prepare_job_output",
    "read_range",
    "read_tail",
    "write_private_file",
]

DEFAULT_TAIL_BYTES = 1 << 20
"""What a log read returns at most by default: the last MiB."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A path the server refuses to use on a job's behalf; `reason` says why, for the log."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of a file: `data` is at most the cap; `size` what the file held when read."""

    data: bytes
    size: int
    truncated: bool


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    """The components of absolute `path` below `root`; '..' and '.' are refused, not resolved."""
    if not path.is_absolute() or not root.is_absolute():
        raise UnsafeFile(path, "paths must be absolute")
    raw = str(path).split("/")
    if any(part in (".", "..") for part in raw):
        raise UnsafeFile(path, "'.' and '..' components are refused")
    try:
        relative = path.relative_to(root)
    except ValueError as exc:
        raise UnsafeFile(path, f"not below the trusted root {root}") from exc
    return relative.parts


def open_dir_beneath(path: Path, *, root: Path = Path("/")) -> int:
    """A descriptor of directory `path`, no component below `root` being a symlink.

    `root` is the operator's choice (configuration) and is opened as is; every component below
    it is opened relative to its parent with ``O_NOFOLLOW``, so a directory a job swapped for a
    symlink is refused instead of followed. The caller closes the descriptor.
    """
    parts = _parts_below(root, path)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(path, f"{part!r} is a symlink or not a directory") from exc
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _dir(path: Path, root: Path) -> Iterator[int]:
    fd = open_dir_beneath(path, root=root)
    try:
        yield fd
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, word in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return word
    return "not a regular file"


def _open_regular(
    path: Path, expected_uid: int | None, root: Path | None, flags: int = _READ_FLAGS
) -> int:
    """A descriptor of regular file `path` opened with `flags` (see `read_tail` for the
    checks); the caller closes it."""
    path = Path(path)
    with _dir(path.parent, root if root is not None else path.parent) as parent:
        first = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISREG(first.st_mode):
            raise UnsafeFile(path, f"is {_kind(first.st_mode)}, not a regular file")
        try:
            fd = os.open(path.name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(path, "was replaced by a symlink") from exc
            raise
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (first.st_dev, first.st_ino) or not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, "was replaced while being opened")
        if expected_uid is not None and st.st_uid != expected_uid:
            raise UnsafeFile(path, f"is owned by uid {st.st_uid}, not {expected_uid}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pread_upto(fd: int, start: int, max_bytes: int) -> bytes:
    """At most `max_bytes` from `start`: a file that grows meanwhile still yields the cap."""
    chunks: list[bytes] = []
    got = 0
    while got < max_bytes:
        chunk = os.pread(fd, min(max_bytes - got, 1 << 16), start + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_tail(
    path: Path,
    *,
    expected_uid: int | None,
    max_bytes: int = DEFAULT_TAIL_BYTES,
    root: Path | None = None,
) -> Tail:
    """The last `max_bytes` of regular file `path`, owned by `expected_uid`; never blocks.

    `root`: a trusted directory above `path` (the site's output root); components below it
    must not be symlinks. Without it only the file itself is opened without following links.
    `expected_uid=None` skips the owner check (single-user mode, where everything is the
    server's). Raises `UnsafeFile` for anything but a regular file of that owner, and
    `FileNotFoundError` when there is nothing there.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    fd = _open_regular(path, expected_uid, root)
    try:
        st = os.fstat(fd)
        start = max(0, st.st_size - max_bytes)
        return Tail(_pread_upto(fd, start, max_bytes), st.st_size, start > 0)
    finally:
        os.close(fd)


def read_range(
    path: Path,
    *,
    offset: int,
    max_bytes: int,
    expected_uid: int | None,
    root: Path | None = None,
) -> bytes:
    """At most `max_bytes` of `path` from byte `offset`, with `read_tail`'s checks: how a
    client that follows a log (``offset`` = what it has so far) reads it."""
    if max_bytes <= 0 or offset < 0:
        raise ValueError("max_bytes must be positive and offset not negative")
    fd = _open_regular(path, expected_uid, root)
    try:
        return _pread_upto(fd, offset, max_bytes)
    finally:
        os.close(fd)


_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY


def append_to_owned_file(
    path: Path, data: bytes, *, expected_uid: int | None, root: Path | None = None
) -> None:
    """Append `data` to the existing regular file `path` of `expected_uid` (the server's note
    at the end of a job's stderr), never through a link, a FIFO or a device the job put
    there: the same checks as `read_tail`, on a write descriptor."""
    fd = _open_regular(path, expected_uid, root, _APPEND_FLAGS | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def owner_of_dir(path: Path, *, root: Path) -> int:
    """The uid owning directory `path`, opened below `root` without following links."""
    fd = open_dir_beneath(path, root=root)
    try:
        return os.fstat(fd).st_uid
    finally:
        os.close(fd)


def _check_parent(fd: int, where: Path) -> None:
    """A directory nobody but root or the server can change: only they can plant entries."""
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeFile(where, f"is owned by uid {st.st_uid}, not root or the server")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFile(
            where, f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}); refused"
        )


def _check_owned_dir(fd: int, where: Path, uid: int, gid: int, mode: int) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (uid, gid) or stat.S_IMODE(st.st_mode) != mode:
        raise UnsafeFile(
            where,
            f"exists as uid {st.st_uid} gid {st.st_gid} mode {stat.S_IMODE(st.st_mode):04o}, "
            f"not the expected {uid}:{gid} {mode:04o}",
        )


def make_owned_dir(
    parent: Path,
    name: str,
    *,
    uid: int,
    gid: int,
    mode: int = 0o750,
    root: Path = Path("/"),
    exist_ok: bool = False,
) -> Path:
    """Create `parent/name` owned by `uid:gid` with `mode`; the parent must be root's.

    Refused: a parent owned by anyone but root (or the server) or writable by group or others
    (a 1777 shared directory would let anybody plant the name first); a `name` that is not a
    single plain component. An entry already there is refused (a planted file or symlink is
    never reused), unless `exist_ok` and it is a real directory with exactly this owner and
    mode (a retry of the same step).
    """
    _check_name(parent / name, name)
    with _dir(parent, root) as pfd:
        _check_parent(pfd, parent)
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            if not exist_ok:
                raise UnsafeFile(parent / name, "already exists (planted?)") from None
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            except OSError as exc:
                raise UnsafeFile(parent / name, "exists and is not a plain directory") from exc
            try:
                _check_owned_dir(fd, parent / name, uid, gid, mode)
            finally:
                os.close(fd)
            return parent / name
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return parent / name


def _check_name(where: Path, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafeFile(where, "a name must be one plain path component")


def create_owned_file(
    dir_fd: int,
    name: str,
    *,
    uid: int,
    gid: int,
    mode: int = 0o640,
    where: Path | None = None,
) -> int:
    """Create `name` in the open directory `dir_fd` (never an existing entry), owned by
    `uid:gid`; returns a write descriptor (``O_APPEND``) the caller closes.

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: a file, symlink or FIFO already under the name is
    refused (`UnsafeFile`), never opened or written through.
    """
    label = where if where is not None else Path(name)
    _check_name(label, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        raise UnsafeFile(label, "already exists (planted?)") from None
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(slots=True)
class JobOutput:
    """A job's fresh output directory and the write descriptors of its files, by name."""

    path: Path
    files: dict[str, int]

    def close(self) -> None:
        """Close the server's copies (after handing them to the job's process)."""
        for fd in self.files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.files.clear()


def prepare_job_output(
    parent: Path,
    name: str,
    *,
    uid: int,
    gid: int,
    files: Iterable[str] = ("stdout", "stderr"),
    dir_mode: int = 0o750,
    file_mode: int = 0o640,
    root: Path = Path("/"),
) -> JobOutput:
    """A new directory `parent/name` for one job, and its output files, all the owner's.

    `gid` is the group that may read them: the project's group where the project shares its
    outputs, the owner's own primary group otherwise. The order matters: the directory is
    created 0700 and root's, the files are created inside it, and only then is the directory
    handed to the owner, so no process of the owner (another of their jobs) can plant a name
    the server is about to open.
    """
    _check_name(parent / name, name)
    with _dir(parent, root) as pfd:
        _check_parent(pfd, parent)
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            raise UnsafeFile(parent / name, "already exists (planted?)") from None
        dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    output = JobOutput(parent / name, {})
    try:
        for file in files:
            output.files[file] = create_owned_file(
                dfd, file, uid=uid, gid=gid, mode=file_mode, where=output.path / file
            )
        os.fchown(dfd, uid, gid)
        os.fchmod(dfd, dir_mode)
    except BaseException:
        output.close()
        raise
    finally:
        os.close(dfd)
    return output


def ensure_private_dir(path: Path) -> list[str]:
    """Make `path` a 0700 directory of the server (creating it, parents 0755); says what changed.

    An existing entry must be a real directory owned by the server (not a symlink, not someone
    else's): that is refused, never repaired, since someone else's directory could already
    hold anything.
    """
    path = Path(path)
    changes: list[str] = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700, follow_symlinks=False)  # whatever the umask said
        return [f"created {path} (0700)"]
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFile(path, f"is {_kind(st.st_mode)}, not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeFile(path, f"is owned by uid {st.st_uid}, not the server ({os.geteuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
        changes.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} -> 0700")
    return changes


def ensure_private_file(path: Path) -> list[str]:
    """Narrow an existing server file (database, key, token) to 0600; says what changed."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_uid != os.geteuid():
            raise UnsafeFile(path, f"is owned by uid {st.st_uid}, not the server")
        if stat.S_IMODE(st.st_mode) == 0o600:
            return []
        os.fchmod(fd, 0o600)
        return [f"{path}: mode {stat.S_IMODE(st.st_mode):04o} -> 0600"]
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600, in a directory only the server owns.

    Written to a new temporary name (``O_EXCL``) in the same directory, flushed, then renamed
    over `path`: readers see the old or the new content, never a mix, and never a file that
    was briefly world-readable.
    """
    path = Path(path)
    with _dir(path.parent, path.parent) as dfd:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeFile(path.parent, "must be the server's and writable by nobody else")
        tmp = f".{path.name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        os.rename(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
