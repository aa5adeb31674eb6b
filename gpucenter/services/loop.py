"""The in-process scheduler loop: a thread that runs a pass every few seconds until stopped.

Several servers may share one database; only the leader (see leader.py) runs passes. A
server that becomes leader first re-adopts the jobs the database says are running, so a
failover or restart never starts a job twice nor forgets one. Stopping the loop leaves
running jobs alone (they are adopted by the next leader); only tests kill them.

The leader also keeps each Slurm site's accounts, limits and QOS in step with the database
(`sync_site`, every ``slurm_sync_interval_s``): awards, top-ups and exhausted allocations
reach the site without an operator. A sync that fails is logged and retried next time; it
never stops scheduling.
"""

from __future__ import annotations

import logging
import threading
import time

from gpucenter.services.accounting_metrics import OPERATOR_METRICS
from gpucenter.services.context import AppContext
from gpucenter.services.leader import LeaderLock, leader_lock_for
from gpucenter.services.scheduling import recover_after_restart, run_pass

log = logging.getLogger(__name__)
MIN_PASS_GAP_S = 0.1
PASS_DUTY_REST = 1.0
STATE_REFRESH_S = 60.0


class SchedulerLoop:
    def __init__(self, ctx: AppContext, interval_s: float, lock: LeaderLock | None = None) -> None:
        self._ctx = ctx
        self._interval = interval_s
        self._lock = lock if lock is not None else leader_lock_for(ctx.engine, ctx.settings.var_dir)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpucenter-scheduler", daemon=True)
        self.passes = 0
        self.is_leader = False
        self._states_refreshed = -STATE_REFRESH_S
        self._synced: dict[str, float] = {}  # Slurm site -> monotonic time of its last sync

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def poke(self) -> None:
        """Run the next pass now (after a submission) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        detach = getattr(self._ctx.dispatcher, "detach", None)
        if detach is not None:
            detach()
        if self.is_leader:
            self._lock.release()
            self.is_leader = False

    def _lead(self) -> bool:
        """Keep or take the leadership; on taking it, adopt what the last leader ran."""
        if self.is_leader:
            if self._lock.still_held():
                return True
            self.is_leader = False
            detach = getattr(self._ctx.dispatcher, "detach", None)
            if detach is not None:
                detach()  # another server leads now: its dispatcher watches these jobs
            return False
        if not self._lock.try_acquire():
            return False
        self.is_leader = True
        adopted = recover_after_restart(self._ctx)
        log.info("this server now runs the scheduler (re-adopted %d running jobs)", adopted)
        return True

    def _refresh_allocation_states(self) -> None:
        """Mark allocations exhausted or expired (and back) as usage and time move on, raise
        budget alerts (each threshold once) and send the e-mails SMTP is configured for."""
        from gpucenter.services.accounting_budgets import (
            SmtpMailer,
            check_budgets,
            deliver_email,
        )
        from gpucenter.services.programmes_awards import refresh_allocation_states

        with self._ctx.sessions.begin() as s:
            changed = refresh_allocation_states(s, self._ctx.now())
        if changed:
            log.info("%d allocation states changed", changed)
        with self._ctx.sessions.begin() as s:
            alerts = check_budgets(s, self._ctx.now())
        if alerts:
            log.info("%d budget alerts raised", len(alerts))
        mailer = SmtpMailer.from_env()
        if mailer is not None:
            deliver_email(self._ctx.sessions, mailer, self._ctx.now(), mailer.domain)

    def sync_slurm_sites(self, now_mono: float) -> int:
        """Apply the account sync to each Slurm site whose interval has passed; returns how
        many sites were synced. Errors are logged (the site may be down) and retried."""
        from gpucenter.services.slurm_sync import sync_site

        every = self._ctx.settings.slurm_sync_interval_s
        if every <= 0:
            return 0
        done = 0
        for rt in self._ctx.site_runtimes():
            if rt.slurm is None or now_mono - self._synced.get(rt.name, -every) < every:
                continue
            self._synced[rt.name] = now_mono
            try:
                commands = sync_site(self._ctx.sessions, rt.slurm, self._ctx.now())
            except Exception:
                log.exception("account sync of Slurm site %s failed; retrying later", rt.name)
                continue
            done += 1
            if commands:
                log.info("Slurm site %s: applied %d account change(s)", rt.name, len(commands))
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if self._lead():
                    run_pass(self._ctx)
                    self.passes += 1
                    OPERATOR_METRICS.observe_cycle(time.monotonic() - began)
                    for rt in self._ctx.site_runtimes():
                        if rt.health.failures:
                            OPERATOR_METRICS.dispatch_error(rt.name)
                    if began - self._states_refreshed >= STATE_REFRESH_S:
                        self._refresh_allocation_states()
                        self._states_refreshed = began
                    self.sync_slurm_sites(began)
            except Exception:
                # A failed pass must not kill the loop; the next pass retries from the database.
                log.exception("scheduling pass failed")
            pass_s = time.monotonic() - began
            self._wake.wait(self._interval)
            self._wake.clear()
            # Under a storm of submissions every request pokes; passes still keep a minimum
            # spacing so that they batch the arrivals instead of starving the API, and the
            # spacing grows with the pass's cost: a pass of d seconds is followed by at
            # least PASS_DUTY_REST x d of rest, so the loop takes at most 1/(1+PASS_DUTY_REST)
            # of a core however long the queue is (a poke does not cut the rest short).
            earliest = began + max(MIN_PASS_GAP_S, (1 + PASS_DUTY_REST) * pass_s)
            rest = earliest - time.monotonic()
            if rest > 0 and not self._stop.is_set():
                self._stop.wait(rest)
