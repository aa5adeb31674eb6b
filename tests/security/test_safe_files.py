"""What the server reads or creates on a job's behalf cannot be steered by the job.

Each attack from issue 17 as a job could stage it in a directory it owns: a symlink to a
root-only file, a FIFO (which would block the reader forever), a huge file, a device, a hard
link, a swapped directory, a file or symlink planted where the server is about to create one.
Reads that could block run in a thread with a deadline, so a regression fails instead of
hanging the suite. Tests that need root (other owners, device nodes) say so.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpucenter.dispatch.isolation.safe_files import (
    UnsafeFile,
    create_owned_file,
    ensure_private_dir,
    ensure_private_file,
    make_owned_dir,
    prepare_job_output,
    read_tail,
    write_private_file,
)
from tests.security.hostile_local.conftest import require

OTHER_UID = 290_077  # stands for the job's owner in root-only tests


def _root() -> None:
    if os.geteuid() != 0:
        require("needs root (files of another owner, device nodes)")


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Run `call` in a thread; fail (not hang) if it has not returned after `seconds`."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"blocked for more than {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_bytes(b"hello\n")
    tail = read_tail(log, expected_uid=os.geteuid())
    assert (tail.data, tail.size, tail.truncated) == (b"hello\n", 6, False)


def test_an_oversized_file_is_capped_to_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_bytes(b"a" * 5000 + b"THE END")
    tail = read_tail(log, expected_uid=os.geteuid(), max_bytes=100)
    assert len(tail.data) == 100 and tail.data.endswith(b"THE END")
    assert tail.truncated and tail.size == 5007


def test_a_symlink_to_a_root_only_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "munge.key"
    secret.write_text("root-only key")
    secret.chmod(0o600)
    (tmp_path / "stdout").symlink_to(secret)
    with pytest.raises(UnsafeFile, match="symlink"):
        read_tail(tmp_path / "stdout", expected_uid=None)


def test_a_symlinked_directory_below_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "stdout").write_text("not the job's")
    (tmp_path / "job-1").symlink_to(tmp_path / "secrets")
    with pytest.raises(UnsafeFile, match="symlink"):
        read_tail(tmp_path / "job-1" / "stdout", expected_uid=None, root=tmp_path)


def test_dot_dot_is_refused_not_resolved(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "x").write_text("x")
    with pytest.raises(UnsafeFile, match=r"'\.\.'"):
        read_tail(Path(f"{tmp_path}/a/../x"), expected_uid=None, root=tmp_path)


def test_a_fifo_never_blocks(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "stdout")
    with pytest.raises(UnsafeFile, match="FIFO"):
        within(5, lambda: read_tail(tmp_path / "stdout", expected_uid=None))


def test_a_fifo_swapped_in_after_the_check_still_never_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: lstat sees a regular file, then the job swaps in a FIFO before the open.
    O_NONBLOCK keeps the open from waiting for a writer; fstat then refuses it."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    os.mkfifo(tmp_path / "stdout")
    real_stat = os.stat

    def stat_sees_regular(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "stdout":
            return real_stat(regular)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_sees_regular)
    with pytest.raises(UnsafeFile, match="replaced"):
        within(5, lambda: read_tail(tmp_path / "stdout", expected_uid=None))


def test_a_symlink_swapped_in_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race again, with a symlink to a secret: O_NOFOLLOW refuses it at the open."""
    (tmp_path / "secret").write_text("root-only")
    (tmp_path / "stdout").symlink_to(tmp_path / "secret")
    real_stat = os.stat

    def stat_sees_target(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "stdout":
            return real_stat(tmp_path / "secret")  # even the same inode as the secret
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_sees_target)
    with pytest.raises(UnsafeFile, match="symlink"):
        read_tail(tmp_path / "stdout", expected_uid=None)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stdout").mkdir()
    with pytest.raises(UnsafeFile, match="directory"):
        read_tail(tmp_path / "stdout", expected_uid=None)


def test_a_device_is_refused_without_being_opened(tmp_path: Path) -> None:
    _root()
    os.mknod(tmp_path / "stdout", 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    with pytest.raises(UnsafeFile, match="character device"):
        within(5, lambda: read_tail(tmp_path / "stdout", expected_uid=None))


def test_a_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_text("x")
    with pytest.raises(UnsafeFile, match="owned by uid"):
        read_tail(tmp_path / "stdout", expected_uid=os.geteuid() + 1)


def test_a_hard_link_to_a_root_file_is_refused(tmp_path: Path) -> None:
    _root()
    secret = tmp_path / "slurmdbd.conf"
    secret.write_text("StoragePass=hunter2")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    os.link(secret, job_dir / "stdout")  # what protected_hardlinks=0 would let a user do
    with pytest.raises(UnsafeFile, match="owned by uid 0"):
        read_tail(job_dir / "stdout", expected_uid=OTHER_UID)


def test_a_shared_world_writable_parent_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "outputs"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(UnsafeFile, match="writable by others"):
        make_owned_dir(shared, "job-1", uid=os.geteuid(), gid=os.getegid())
    with pytest.raises(UnsafeFile, match="writable by others"):
        prepare_job_output(shared, "job-1", uid=os.geteuid(), gid=os.getegid())


def test_a_parent_owned_by_a_user_is_refused(tmp_path: Path) -> None:
    _root()
    users = tmp_path / "outputs"
    users.mkdir()
    os.chown(users, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeFile, match=f"uid {OTHER_UID}"):
        make_owned_dir(users, "job-1", uid=OTHER_UID, gid=OTHER_UID)


@pytest.mark.parametrize("planted", ["symlink", "file", "dir"])
def test_a_planted_output_directory_is_detected(tmp_path: Path, planted: str) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    entry = tmp_path / "job-1"
    if planted == "symlink":
        entry.symlink_to(target)
    elif planted == "file":
        entry.write_text("")
    else:
        entry.mkdir()
    with pytest.raises(UnsafeFile, match="already exists"):
        make_owned_dir(tmp_path, "job-1", uid=os.geteuid(), gid=os.getegid())
    with pytest.raises(UnsafeFile, match="already exists"):
        prepare_job_output(tmp_path, "job-1", uid=os.geteuid(), gid=os.getegid())
    assert list(target.iterdir()) == []


def test_a_retry_accepts_only_its_own_directory(tmp_path: Path) -> None:
    uid, gid = os.geteuid(), os.getegid()
    made = make_owned_dir(tmp_path, "w", uid=uid, gid=gid, mode=0o750)
    assert make_owned_dir(tmp_path, "w", uid=uid, gid=gid, mode=0o750, exist_ok=True) == made
    made.chmod(0o777)
    with pytest.raises(UnsafeFile, match="not the expected"):
        make_owned_dir(tmp_path, "w", uid=uid, gid=gid, mode=0o750, exist_ok=True)
    (tmp_path / "s").symlink_to(made)
    with pytest.raises(UnsafeFile, match="not a plain directory"):
        make_owned_dir(tmp_path, "s", uid=uid, gid=gid, exist_ok=True)


def test_job_output_belongs_to_the_owner(tmp_path: Path) -> None:
    _root()
    output = prepare_job_output(tmp_path, "job-9", uid=OTHER_UID, gid=OTHER_UID + 1)
    try:
        os.write(output.files["stdout"], b"from the job\n")
    finally:
        output.close()
    st = os.stat(output.path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_UID + 1, 0o750)
    for name in ("stdout", "stderr"):
        fst = os.stat(output.path / name)
        assert (fst.st_uid, fst.st_gid, stat.S_IMODE(fst.st_mode)) == (
            OTHER_UID, OTHER_UID + 1, 0o640,
        )  # fmt: skip
    assert read_tail(output.path / "stdout", expected_uid=OTHER_UID).data == b"from the job\n"


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_create_owned_file_never_opens_a_planted_entry(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    if planted == "symlink":
        (tmp_path / "stdout").symlink_to(victim)
    else:
        os.mkfifo(tmp_path / "stdout")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(UnsafeFile, match="already exists"):
            within(5, lambda: create_owned_file(dfd, "stdout", uid=os.geteuid(), gid=os.getegid()))
    finally:
        os.close(dfd)
    assert victim.read_text() == "untouched"


def test_private_dirs_are_made_or_narrowed(tmp_path: Path) -> None:
    state = tmp_path / "var" / "state"
    assert ensure_private_dir(state) == [f"created {state} (0700)"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    state.chmod(0o755)
    assert ensure_private_dir(state) == [f"{state}: mode 0755 -> 0700"]
    assert ensure_private_dir(state) == []
    (tmp_path / "link").symlink_to(state)
    with pytest.raises(UnsafeFile, match="symlink"):
        ensure_private_dir(tmp_path / "link")


def test_someone_elses_state_dir_is_refused(tmp_path: Path) -> None:
    _root()
    os.chown(tmp_path, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeFile, match="not the server"):
        ensure_private_dir(tmp_path)


def test_private_files_are_narrowed_and_links_refused(tmp_path: Path) -> None:
    db = tmp_path / "gpucenter.db"
    db.write_text("")
    db.chmod(0o644)
    assert ensure_private_file(db) == [f"{db}: mode 0644 -> 0600"]
    assert ensure_private_file(db) == []
    (tmp_path / "link").symlink_to(db)
    with pytest.raises(OSError):
        ensure_private_file(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeFile, match="FIFO"):
        within(5, lambda: ensure_private_file(tmp_path / "fifo"))


def test_write_private_file_is_atomic_and_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "audit.key", b"k1")
        write_private_file(tmp_path / "audit.key", b"k2")
    finally:
        os.umask(old)
    assert (tmp_path / "audit.key").read_bytes() == b"k2"
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]
    tmp_path.chmod(0o777)
    with pytest.raises(UnsafeFile, match="writable by nobody else"):
        write_private_file(tmp_path / "audit.key", b"k3")
