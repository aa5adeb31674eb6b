"""The in-process scheduler loop: a thread that runs a pass every few seconds until stopped.

Several servers may share one database; only the leader (see leader.py) runs passes. A
server that becomes leader first re-adopts the jobs the database says are running, so a
failover or restart never starts a job twice nor forgets one. Stopping the loop leaves
running jobs alone (they are adopted by the next leader); only tests kill them.

Leading comes with an epoch (leader.py): every write of the loop goes through
`AppContext.fenced`, so once another server has taken over, this one's writes are refused
(`Deposed`) and it steps down. After each pass the leader runs its due periodic tasks
(`services.periodic`, listed by `scheduling.tasks`): each Slurm site's accounts sync and
usage ingest, each Kubernetes site's namespace sync, allocation states, award aftercare,
the use check. A task that fails is logged and
retried; it never stops scheduling.

A poke (a job was submitted: run a pass now) reaches the leader wherever it runs on this
host: a follower forwards it as one datagram to the leader's abstract Unix socket, named
after the database. With `gpucenter serve --workers N` the leader is a process of its own
(`run_dedicated`), so that a pass never holds the GIL of a process that answers requests.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from gpucenter.services.context import AppContext
from gpucenter.services.fencing import Deposed
from gpucenter.services.ops.metrics import OPERATOR_METRICS, metrics_dir
from gpucenter.services.periodic import PeriodicRunner, PeriodicTask
from gpucenter.services.scheduling.cycle import recover_after_restart, run_pass
from gpucenter.services.scheduling.leader import LeaderLock, leader_lock_for
from gpucenter.services.scheduling.tasks import periodic_tasks

log = logging.getLogger(__name__)
MIN_PASS_GAP_S = 0.1
PASS_DUTY_REST = 1.0
MAX_REST_S = 5.0


class SchedulerLoop:
    def __init__(
        self,
        ctx: AppContext,
        interval_s: float,
        lock: LeaderLock | None = None,
        tasks: Sequence[PeriodicTask] | None = None,
    ) -> None:
        self._ctx = ctx
        self._interval = interval_s
        self._lock = (
            lock
            if lock is not None
            else leader_lock_for(ctx.engine, ctx.settings.var_dir, ctx.settings.leader_lease_s)
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpucenter-scheduler", daemon=True)
        self.passes = 0
        self.is_leader = False
        self.periodic = PeriodicRunner(periodic_tasks(ctx) if tasks is None else tasks)
        self._health_written: dict[str, tuple[bool, str]] = {}
        self.tried = threading.Event()  # set after the first attempt to lead
        self._poke_address = poke_address(ctx.engine.url.render_as_string(hide_password=True))
        self._poke_out: socket.socket | None = None
        self._poked_at = -MIN_PASS_GAP_S
        self._poke_in: socket.socket | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def poke(self) -> None:
        """Run the next pass now (after a submission) instead of at the next tick; where
        another process on this host leads, tell it (one datagram, never blocks).

        A follower does not wake itself: it would only try to take the leadership again,
        and each try opens a connection of its own for the lock (the lock's keepalives are
        per connection), so under a storm of submissions every API worker opened one or two
        database connections per pass gap for nothing. It tries at its own tick, which is
        what the takeover time is measured against."""
        if self.is_leader:
            self._wake.set()
            return
        if self._poke_address is None:
            self._wake.set()  # no other process to tell: leaders here are in-process
            return
        # At most one datagram per MIN_PASS_GAP_S from each process: the leader passes no
        # more often than that, a storm keeps it awake anyway, and a datagram per request
        # cost each submission a system call that wakes another process (about a tenth of
        # an API worker's time at 500 submissions/s). A lone submission always pokes.
        now = time.monotonic()
        if now - self._poked_at < MIN_PASS_GAP_S:
            return
        self._poked_at = now
        try:
            if self._poke_out is None:
                self._poke_out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._poke_out.setblocking(False)
            self._poke_out.sendto(b"!", self._poke_address)
        except OSError:
            pass  # no leader listening here (or its queue is full: it is awake anyway)

    def _listen(self) -> None:
        """As leader: take pokes from this host's followers (best effort: if the address
        is still held by a leader that has not noticed it lost, try again next pass)."""
        if self._poke_in is not None or self._poke_address is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self._poke_address)
        except OSError:
            sock.close()
            return
        sock.settimeout(0.5)
        self._poke_in = sock
        threading.Thread(
            target=self._take_pokes, args=(sock,), name="gpucenter-pokes", daemon=True
        ).start()

    def _take_pokes(self, sock: socket.socket) -> None:
        while self._poke_in is sock and not self._stop.is_set():
            try:
                sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self._wake.set()

    def _unlisten(self) -> None:
        sock, self._poke_in = self._poke_in, None
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._unlisten()
        self._ctx.dispatcher.detach()
        self._lock.release()  # a leader steps down; a follower closes its kept connection
        self.is_leader = False
        # The loop's thread has ended: nothing of it writes any more, and code that runs a
        # pass itself afterwards (tests, commands) runs unfenced again.
        self._ctx.fence.reset()

    def _lead(self) -> bool:
        """Keep or take the leadership; on taking it, hold its epoch (every scheduler write
        checks it) and adopt what the last leader ran."""
        if self.is_leader:
            if self._lock.still_held():
                return True
            self._step_down()
            return False
        if not self._lock.try_acquire():
            return False
        epoch = self._lock.epoch
        if epoch is not None:
            self._ctx.fence.hold(epoch)
        self.is_leader = True
        self.periodic.forget()
        self._health_written.clear()
        adopted = recover_after_restart(self._ctx)
        log.info(
            "this server now runs the scheduler (epoch %s; re-adopted %d running jobs)",
            epoch,
            adopted,
        )
        return True

    def _step_down(self) -> None:
        """Another server leads now: refuse our scheduler writes, let it watch the jobs."""
        self.is_leader = False
        self._ctx.fence.drop()
        self._ctx.dispatcher.detach()
        for rt in self._ctx.site_runtimes():  # the new leader learns these from the sites
            rt.unapplied.clear()
            rt.unrecorded.clear()
        log.warning("this server no longer runs the scheduler")

    def _record_health(self) -> None:
        """Each site's health for readiness in every process (see sites.health_record)."""
        from gpucenter.services.sites.health_record import record_site_health

        with self._ctx.fenced() as s:
            record_site_health(s, self._ctx.site_runtimes(), self._ctx.now(), self._health_written)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                leading = self._lead()
                self.tried.set()
                if not leading:
                    self._unlisten()
                else:
                    self._listen()
                    run_pass(self._ctx)
                    self.passes += 1
                    OPERATOR_METRICS.pass_succeeded()
                    self._ctx.pass_health.succeeded()
                    OPERATOR_METRICS.observe_cycle(time.monotonic() - began)
                    for rt in self._ctx.site_runtimes():
                        if rt.health.failures:
                            OPERATOR_METRICS.dispatch_error(rt.name)
                    OPERATOR_METRICS.publish(metrics_dir(self._ctx.settings))
                    self._record_health()
                    for name in self._ctx.wanted_tasks():
                        self.periodic.request(name)
                    self.periodic.run_due(self._ctx, self._ctx.now())
            except Deposed as exc:
                log.warning("a newer scheduler leader exists (%s): stepping down", exc)
                if self.is_leader:
                    self._step_down()
                    self._lock.release()
            except Exception as exc:
                # A failed pass must not kill the loop; the next pass retries from the database.
                # Passes that keep failing make /readyz say so (`check_readiness`), in every
                # process of this server: the counters are published at once.
                log.exception("scheduling pass failed")
                OPERATOR_METRICS.pass_failed(f"{exc.__class__.__name__}: {exc}")
                self._ctx.pass_health.failed(f"{exc.__class__.__name__}: {exc}")
                with contextlib.suppress(OSError):
                    OPERATOR_METRICS.publish(metrics_dir(self._ctx.settings), force=True)
            pass_s = time.monotonic() - began
            self._wake.wait(self._interval)
            self._wake.clear()
            # Under a storm of submissions every request pokes; passes still keep a minimum
            # spacing so that they batch the arrivals instead of starving the API, and the
            # spacing grows with the pass's cost: a pass of d seconds is followed by at
            # least PASS_DUTY_REST x d of rest, so the loop takes at most 1/(1+PASS_DUTY_REST)
            # of a core however long the queue is (a poke does not cut the rest short).
            # Only a leader rests (a follower tries to lead at every tick), never more than
            # MAX_REST_S: a pass that took long because the process was paused (SIGSTOP) is
            # no reason for its follower-to-be to wait as long before taking over.
            duty = (1 + PASS_DUTY_REST) * pass_s if self.is_leader else 0.0
            earliest = began + min(MAX_REST_S, max(MIN_PASS_GAP_S, duty))
            rest = earliest - time.monotonic()
            if rest > 0 and not self._stop.is_set():
                self._stop.wait(rest)


def poke_address(database: str) -> str | None:
    """The abstract Unix socket (Linux) of the leader of `database` on this host; None
    where there are no abstract sockets (pokes then stay within a process)."""
    if not sys.platform.startswith("linux"):
        return None
    return "\0gpucenter-poke-" + hashlib.sha256(database.encode()).hexdigest()[:24]


def run_dedicated(ready: Any) -> None:
    """The scheduler loop as a process of its own (`gpucenter serve --workers N`): API
    workers then never share a GIL with a pass, whose CPU-bound stretches would otherwise
    hold up every request of the worker that leads. Sets `ready` (a multiprocessing Event)
    after its first attempt to lead; runs until SIGTERM/SIGINT or its parent dies. The API
    workers keep their own loops as followers: if this process dies, one of them leads."""
    from gpucenter.config import get_settings
    from gpucenter.logs import configure_json_logging
    from gpucenter.services.wiring import build_context

    parent = os.getppid()
    _die_with_parent()
    configure_json_logging()
    settings = get_settings()
    _lower_priority(settings.scheduler_nice)
    ctx = build_context(settings)
    gc.collect()
    gc.freeze()  # start-up objects out of the collector's walks (see api.app for why)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    loop = SchedulerLoop(ctx, ctx.settings.scheduler_interval_s)
    loop.start()
    loop.tried.wait(60)
    ready.set()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            break  # the server went away without telling us (no PDEATHSIG here)
    loop.stop()  # running jobs stay up; the next leader re-adopts them


def _lower_priority(nice: int) -> None:
    """Give the API's requests the CPU first. Measured (bench/submit_load.py, issue 18): at
    500 submissions/s on two cores, with passes over a queue growing to 15,000 jobs, the p99
    of each 10 s window after the first was 55-263 ms with the scheduler at the server's
    priority and 25-37 ms with it at niceness 10. A pass that waits for the CPU only starts
    its jobs a little later; the lease heartbeat needs a millisecond a second and still gets
    it. Linux keeps niceness per thread: every thread the process has is lowered, and new
    threads and processes (the local site's jobs) inherit it."""
    if nice <= 0:
        return
    try:  # every thread there is already (libraries start some at import), then new ones
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
        except OSError as exc:
            log.warning("could not lower the scheduler's CPU priority (%s)", exc)


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, even by SIGKILL (no orphan leader)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


__all__ = [
    "SchedulerLoop",
    "poke_address",
    "run_dedicated",
]
