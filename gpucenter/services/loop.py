"""The in-process scheduler loop: a thread that runs a pass every few seconds until stopped."""

from __future__ import annotations

import logging
import threading

from gpucenter.services.context import AppContext
from gpucenter.services.scheduling import run_pass

log = logging.getLogger(__name__)


class SchedulerLoop:
    def __init__(self, ctx: AppContext, interval_s: float) -> None:
        self._ctx = ctx
        self._interval = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpucenter-scheduler", daemon=True)
        self.passes = 0

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Run the next pass now (after a submission) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                run_pass(self._ctx)
                self.passes += 1
            except Exception:
                # A failed pass must not kill the loop; the next pass retries from the database.
                log.exception("scheduling pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()
