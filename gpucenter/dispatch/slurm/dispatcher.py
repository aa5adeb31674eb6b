"""The Slurm dispatcher: gpucenter hands jobs to a Slurm cluster with its command-line tools.

Same `Dispatcher` protocol as the local one, so the scheduler loop does not know which it has.
Everything sbatch needs comes in the `LaunchRequest` (the job's shape, its owner, its
project's account, name and QOS): the dispatcher never reads gpucenter's database.

What changes with Slurm, and how we treat it:

- **Slurm places the job.** gpucenter's core still runs on a snapshot of the site (its nodes
  and GPUs, read from ``sinfo`` by `read_site`, written to the site file with
  ``gpucenter slurm site``) and submits a job when the core says it fits; the placement it
  picked is *advisory*. We ask Slurm for the shape (``--nodes``, ``--gres=gpu:<type>:<n>``),
  not for the GPU indices, and Slurm's own scheduler and limits (GrpTRESMins, fair share)
  decide where and when. ``pin_nodes=True`` also passes ``--nodelist`` from the placement.
- **Submitted is not started.** `submit` returns as soon as Slurm accepted the job (gpucenter
  then shows it RUNNING, i.e. dispatched). While Slurm keeps it queued, `poll` tells the
  `SlurmObserver` Slurm's pending reason (``AssocGrpGRESMinutes``...) so that the user sees
  why it waits; when Slurm starts it, the observer gets the real start time, which is what
  the charge is computed from (allocated GPUs x the time Slurm ran it, not time in the queue).
- **The controller may be down.** Every call that cannot reach Slurm raises `SlurmUnavailable`
  (a `DispatchError`). In `poll` that is not an error: jobs are left as they are, the observer
  marks them ``SiteUnavailable`` with Slurm's message, and the next poll reads them again.
  Cancels that could not be delivered are retried on each poll.
- **Restarts.** Slurm jobs outlive gpucenter. `adopt` re-attaches a job the database says is
  running (by the Slurm job id gpucenter recorded) when Slurm's copy still carries a valid
  marker for that job. Every job carries ``--comment=gpucenter:<job id>:<run>:<mac>``, a
  per-run marker under a key only the server can read (`marker`: why a user who copies the
  marker of their own job gains nothing). A submit for a job Slurm already runs under a valid
  marker for this very job *and run* (a crash between sbatch and the database commit) adopts
  that Slurm job instead of submitting it twice, but only a Slurm job that runs as the job's
  owner (the server, without ``run_as_owner``) under the project's account; of several such,
  the earliest submitted (the lowest Slurm job id). Anything else that names the job (another
  user's or account's job, a forged or old-run marker, a later copy) is ignored, logged and
  kept in `refused_adoptions`, and the job is submitted as usual. `shutdown` and `detach`
  leave jobs running.
- **Started once, even across leaders** (``hold_until_recorded``, on in the server). A job is
  submitted *held* (``sbatch --hold``) and released by the next poll once the observer
  confirms that gpucenter recorded this very Slurm job as the job's start. A server that was
  deposed while submitting (paused between its checks and sbatch) leaves a held job nobody
  recorded: the leader's poll cancels it before it ever runs, or adopts it when the job is
  still waiting to start.
- **Time limits.** Slurm counts them in whole minutes and stops a job only at its periodic
  limit check (every 30 s), after ``OverTimeLimit`` and with ``KillWait`` for the job to
  exit: `capabilities` declares that (60 s steps, `grace_s`), so that admission reserves, and
  a run is charged for, what the site may really run.
- **Accounts.** Jobs are charged at Slurm to the project's account in gpucenter's namespace
  (`accounts.project_account_name`, under the site's top account). sbatch errors that say
  the account, the owner or its group is not there yet raise `SiteNotReady`: the job waits.
"""

from __future__ import annotations

import logging
import math
import os
import pwd
import re
import secrets
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from gpucenter.dispatch.base import (
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    SiteNotReady,
    StateChange,
)
from gpucenter.dispatch.isolation.safe_files import make_owned_dir
from gpucenter.dispatch.slurm.accounts import QOS_NORMAL, project_account_name
from gpucenter.dispatch.slurm.cli import SlurmCli, SlurmUnavailable, parse_slurm_time
from gpucenter.dispatch.slurm.marker import COMMENT_PREFIX, Marker, MarkerKey, parse_marker
from gpucenter.dispatch.slurm.states import Phase, describe_reason, exit_status, map_state
from gpucenter.domain.clock import Clock, Instant, SystemClock
from gpucenter.domain.cluster import Node
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.domain.sessions import TCP_VARIABLE, TOKEN_VARIABLE

__all__ = [
    "COMMENT_PREFIX",
    "LIMIT_CHECK_S",
    "SlurmDispatcher",
    "SlurmObserver",
    "cluster_name",
    "limit_settings",
    "read_site",
]

_log = logging.getLogger(__name__)

_SQUEUE_FIELDS = ("id", "state", "reason", "start", "end", "comment")
_SACCT_FIELDS = ("id", "state", "exit", "start", "end", "reason")
# Variables a job's own env may not set: they would change how sbatch reads our options.
_RESERVED_ENV = re.compile(r"^(SBATCH_|SLURM_|SALLOC_|SRUN_|GPUCENTER_)")

_CAPABILITIES = SiteCapabilities(
    SiteKind.SLURM,
    containers=False,
    adopts_after_restart=True,  # Slurm jobs outlive gpucenter; found again by job id
    reports_utilisation=False,  # sacct's figures come in with the usage ingest instead
    enforces_time_limit=True,  # sbatch --time
    time_limit_step_s=60,  # whole minutes, rounded up
)
LIMIT_CHECK_S = 30
"""slurmctld looks for jobs past their limit this often (PERIODIC_TIMEOUT in 22.05)."""
_HELD = frozenset({"JobHeldUser", "JobHeldAdmin"})
# sbatch's words (22.05) for what gpucenter's sync or provisioning puts right: the job waits.
_NOT_READY = (
    ("invalid account", "the project's account is not at the site yet"),
    ("invalid --uid", "the job's owner has no account at the site yet"),
    ("invalid user id", "the job's owner has no account at the site yet"),
    ("invalid --gid", "the job's owner has no group of the same name at the site yet"),
    ("invalid group id", "the job's owner has no group of the same name at the site yet"),
    ("user's group not permitted", "the job's owner has no group of the same name at the site"),
)


class SlurmObserver(Protocol):
    """Told what `poll` learns about jobs Slurm holds but has not ended (see services)."""

    def started(self, job_id: JobId, at: Instant) -> None: ...

    def waiting(self, job_id: JobId, reason: str, detail: str) -> None: ...

    def recorded(self, job_id: JobId, external_id: str) -> bool | None:
        """Is this the Slurm job gpucenter recorded for the job? None: not known yet."""
        ...


@dataclass(slots=True)
class _Tracked:
    job_id: JobId
    external_id: str
    note: tuple[str, str] | None = None  # last (reason, detail) told to the observer
    started: bool = False
    missing: int = 0  # polls in a row in which neither squeue nor sacct knew the job
    cancel_pending: bool = False
    launched: Launched | None = None  # what submit answered (a repeated submit gets it again)


@dataclass(slots=True)
class _Seen:
    state: str
    reason: str = ""
    start: Instant | None = None
    end: Instant | None = None
    exit: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class SlurmDispatcher:
    """Hands jobs to one Slurm cluster; implements the `Dispatcher` protocol."""

    def __init__(
        self,
        log_dir: Path,
        *,
        cli: SlurmCli | None = None,
        partition: str | None = None,
        clock: Clock | None = None,
        observer: SlurmObserver | None = None,
        run_as_owner: bool = False,
        pin_nodes: bool = False,
        missing_polls_before_lost: int = 5,
        top_account: str = "gpucenter",
        grace_s: int = LIMIT_CHECK_S + 30,
        hold_until_recorded: bool = False,
        marker_key: MarkerKey | None = None,
        sessions_over_tcp: bool = False,
    ) -> None:
        """`run_as_owner`: sbatch --uid/--gid of the request's owner (the server must be
        root); otherwise jobs run as the calling user. `grace_s`: how long past its rounded
        limit Slurm may let a job run (OverTimeLimit + LIMIT_CHECK_S + KillWait; by default
        Slurm's own defaults). `hold_until_recorded`: see the module docstring (needs an
        observer that answers `recorded`). `marker_key`: the server's key for the jobs'
        markers (`marker`); without one, a key of this process alone (nothing it submitted
        is adopted after a restart). `sessions_over_tcp`: interactive sessions listen on TCP
        on their node (a multi-host site: the server cannot reach a Unix socket there)."""
        self._log_dir = Path(log_dir)
        self._cli = cli or SlurmCli()
        self._partition = partition
        self._clock: Clock = clock or SystemClock()
        self._observer = observer
        self._run_as_owner = run_as_owner
        self._pin = pin_nodes
        self._lost_after = missing_polls_before_lost
        self._jobs: dict[JobId, _Tracked] = {}
        # Live Slurm jobs whose comment names a job nobody tracks (ours, or forged), with
        # the marker when it is valid (None: a bad MAC or the old form).
        self._orphans: dict[JobId, list[tuple[str, Marker | None]]] = {}
        self._refused: dict[str, str] = {}  # Slurm job id -> why it was not adopted
        self._lock = threading.Lock()
        self._unavailable = ""
        self._top = top_account
        self._hold = hold_until_recorded and observer is not None
        self._capabilities = replace(
            _CAPABILITIES,
            time_limit_grace_s=max(0, grace_s),
            sessions_over_tcp=sessions_over_tcp,
        )
        self._key = marker_key or MarkerKey(secrets.token_bytes(32), top_account)

    @property
    def capabilities(self) -> SiteCapabilities:
        return self._capabilities

    @property
    def refused_adoptions(self) -> dict[str, str]:
        """Slurm jobs whose comment named a gpucenter job but that were not that job's run
        (another user's or another account's, a forged or an old run's marker, a later copy
        of a valid one), by Slurm job id: why."""
        with self._lock:
            return dict(self._refused)

    @property
    def unavailable(self) -> str:
        """Why the last poll could not reach Slurm; empty when it could (poll does not
        raise: the jobs stay as they are and say why)."""
        return self._unavailable

    # ----------------------------------------------------------------- submit
    def _environment(self, request: LaunchRequest) -> dict[str, str]:
        env = {k: v for k, v in request.env.items() if not _RESERVED_ENV.match(k)}
        env["GPUCENTER_JOB_ID"] = str(request.job_id)
        if self._capabilities.sessions_over_tcp and TOKEN_VARIABLE in request.env:
            env[TCP_VARIABLE] = "1"  # an interactive session: listen where the server reaches
        return env

    def sbatch_args(self, request: LaunchRequest) -> list[str]:
        """sbatch's arguments for a job, all from the request (the shape, not the advisory
        placement, sizes it). Public so tests can check them without Slurm."""
        out, err = self._log_paths(request)
        gpu = request.gpu
        args = [
            "--parsable",
            f"--job-name={request.name or f'gpucenter-{request.job_id}'}",
            f"--account={project_account_name(request.account, self._top)}",
            f"--nodes={gpu.nodes}",
            f"--gres=gpu:{gpu.gpu_type}:{gpu.gpus_per_node}",
            # Slurm counts time limits in whole minutes; round up so a job never gets less.
            f"--time={max(1, math.ceil(request.time_limit_s / 60))}",
            f"--comment={self._key.marker(request.job_id, request.run)}",
            f"--output={out}",
            f"--error={err}",
            f"--chdir={request.workdir or out.parent}",
            "--export=ALL",
        ]
        if self._partition:
            args.append(f"--partition={self._partition}")
        if self._run_as_owner:
            owner = request.owner
            uid = owner.username if owner.uid is None else owner.uid
            args.append(f"--uid={uid}")
            # Without a known gid: the owner's primary group on this host, else sbatch's
            # own choice (the user's primary group). A group named like the user is not
            # a given: many sites put their users in one shared group.
            gid = owner.gid if owner.gid is not None else _primary_gid(owner.username)
            if gid is not None:
                args.append(f"--gid={gid}")
        # Only a QOS other than the default is named: a site whose accounts were never
        # synced has no opportunistic QOS, and normal jobs must still run there.
        if request.qos and request.qos != QOS_NORMAL:
            args.append(f"--qos={request.qos}")
        if self._pin:
            args.append("--nodelist=" + ",".join(dict.fromkeys(p.node for p in request.placement)))
        if self._hold:
            args.append("--hold")
        return args

    def submit(self, request: LaunchRequest) -> Launched:
        """Hand the job to Slurm; raises DispatchError (SlurmUnavailable when unreachable,
        SiteNotReady when its account or owner is not provisioned at the site yet). A job
        already submitted (its start was not recorded: the same run is started again) gets
        the same answer, never a second Slurm job."""
        with self._lock:
            tracked = self._jobs.get(request.job_id)
            if tracked is not None and tracked.launched is not None:
                return tracked.launched
            if tracked is not None:
                raise DispatchError(f"job {request.job_id} is already submitted to Slurm")
            if request.image is not None:
                raise DispatchError(f"job {request.job_id}: this site runs no container images")
            args = self.sbatch_args(request)
            existing = self._adoptable(request, self._orphans.pop(request.job_id, []))
            if existing is not None:
                _log.warning("job %s already in Slurm as %s: adopted", request.job_id, existing)
                external_id = existing
            else:
                self._check_log_dir(request)
                script = f"#!/bin/bash\n{request.command}\n"
                env = self._environment(request)
                try:
                    out = self._cli.run("sbatch", args, stdin=script, env=env)
                except SlurmUnavailable:
                    raise
                except DispatchError as exc:
                    raise _not_ready(exc) from exc
                external_id = out.strip().split(";", 1)[0]
                if not external_id.isdigit():
                    raise DispatchError(f"sbatch printed no job id: {out.strip()!r}")
            launched = Launched(
                job_id=request.job_id,
                external_id=external_id,
                stdout_path=str(self._log_paths(request)[0]),
                stderr_path=str(self._log_paths(request)[1]),
                started_at=self._clock.now(),
            )
            self._jobs[request.job_id] = _Tracked(request.job_id, external_id, launched=launched)
        _log.info("job %s submitted to Slurm as %s", request.job_id, external_id)
        return launched

    def _adoptable(
        self, request: LaunchRequest, candidates: Sequence[tuple[str, Marker | None]]
    ) -> str | None:
        """The live Slurm job among `candidates` (all name the job in their comment) that is
        really this run of the job: a valid marker for this job and run, as the job's owner,
        under its project's account; of several, the earliest submitted (a copy of the
        marker is always submitted after the job it was copied from). The others are
        logged, remembered in `refused_adoptions`, never adopted."""
        if not candidates:
            return None
        account = project_account_name(request.account, self._top).lower()
        owner = request.owner
        if not self._run_as_owner:
            want_uid: int | None = os.geteuid()
        elif owner.uid is not None:
            want_uid = owner.uid
        else:
            want_uid = _uid_of(owner.username)
        found: str | None = None
        ordered = sorted(candidates, key=lambda c: (len(c[0]), c[0]))  # Slurm ids, ascending
        for ext, valid in ordered:
            if valid is None or valid.job_id != request.job_id or valid.run != request.run:
                what = (
                    "no valid marker (forged, or from an older gpucenter)"
                    if valid is None
                    else f"the marker of run {valid.run}, not of run {request.run}"
                )
                self._refuse(
                    ext,
                    f"Slurm job {ext} names job {request.job_id} in its comment but carries "
                    f"{what}: not adopted",
                )
                continue
            try:
                text = self._cli.run("scontrol", ["-o", "show", "job", ext])
            except SlurmUnavailable:
                raise
            except DispatchError:  # gone meanwhile: nothing to adopt
                continue
            user = re.search(r"(?:^| )UserId=([^( ]*)\((\d+)\)", text)
            acct = re.search(r"(?:^| )Account=(\S*)", text)
            name, uid = (user.group(1), int(user.group(2))) if user else ("?", -1)
            same_user = uid == want_uid if want_uid is not None else name == owner.username
            same_account = acct is not None and acct.group(1).lower() == account
            if same_user and same_account and found is None:
                found = ext
                continue
            if same_user and same_account:
                self._refuse(
                    ext,
                    f"Slurm job {ext} carries job {request.job_id}'s marker for run "
                    f"{request.run}, but Slurm job {found} was submitted before it with the "
                    "same marker: not adopted (a copied marker?)",
                )
                continue
            self._refuse(
                ext,
                f"Slurm job {ext} carries job {request.job_id}'s marker but runs as "
                f"{name} ({uid}) under account {acct.group(1) if acct else '?'}, not as the "
                f"job's owner {owner.username} under {account}: not adopted (forged comment?)",
            )
        return found

    def _refuse(self, ext: str, why: str) -> None:
        if ext not in self._refused:
            _log.warning("%s", why)
        self._refused[ext] = why

    def _log_home(self, request: LaunchRequest) -> Path:
        """Where the job's output goes: the owner's own directory below the log directory
        (run_as_owner), else the log directory itself (every job runs as the server)."""
        if not self._run_as_owner:
            return self._log_dir
        return self._log_dir / request.owner.username

    def _log_paths(self, request: LaunchRequest) -> tuple[Path, Path]:
        home = self._log_home(request)
        return home / f"job-{request.job_id}.out", home / f"job-{request.job_id}.err"

    def _check_log_dir(self, request: LaunchRequest) -> None:
        """Make the job's log directory before sbatch; SiteNotReady (the job waits, saying
        why) where that cannot be done safely.

        run_as_owner: the log directory must be root's (the server's) and writable by nobody
        else (a shared 1777 one lets anybody plant a file or a symlink where another user's
        output will go); made 0711 when missing. Below it the owner's directory is made by
        the server, owned by the owner and their primary group, mode 0700; one already there
        must be a real directory of the owner (what mode they give it is theirs to say)."""
        if not self._run_as_owner:
            try:
                self._log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SiteNotReady(
                    f"the log directory {self._log_dir} cannot be made: {exc}"
                ) from exc
            return
        uid, gid = self._owner_ids(request)
        try:
            self._log_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
            st = os.stat(self._log_dir)
        except OSError as exc:
            raise SiteNotReady(f"the log directory {self._log_dir} cannot be made: {exc}") from exc
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SiteNotReady(
                f"the log directory {self._log_dir} must be root's and writable by nobody "
                f"else (it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); gpucenter "
                "makes one directory per user below it (chown root and chmod 0711 it)"
            )
        home = self._log_home(request)
        try:
            try:
                existing = os.lstat(home)
            except FileNotFoundError:
                make_owned_dir(
                    self._log_dir, home.name, uid=uid, gid=gid, mode=0o700, root=self._log_dir
                )
                return
        except OSError as exc:  # UnsafeFile too: a planted entry, a parent not root's
            raise SiteNotReady(f"the owner's log directory {home} cannot be made: {exc}") from exc
        if not stat.S_ISDIR(existing.st_mode) or existing.st_uid != uid:
            raise SiteNotReady(
                f"{home} is not a directory of the job's owner (uid {existing.st_uid}, "
                f"mode {existing.st_mode:o}; expected a directory of uid {uid}); "
                "gpucenter does not write a job's output there"
            )

    def _owner_ids(self, request: LaunchRequest) -> tuple[int, int]:
        """The owner's uid and group at the site, as the request gives them, else looked up
        by name on the server's host (which must share the cluster's users: one directory
        service). The group does not open the 0700 directory to anyone; without one known,
        the server's own."""
        owner = request.owner
        if owner.uid is not None:
            gid = owner.gid if owner.gid is not None else _primary_gid(owner.username)
            return owner.uid, gid if gid is not None else os.getegid()
        try:
            entry = pwd.getpwnam(owner.username)
        except KeyError:
            raise SiteNotReady(
                f"the job's owner {owner.username!r} has no Unix account on the server's host "
                "(it makes the owner's log directory, and must share the cluster's users)"
            ) from None
        return entry.pw_uid, owner.gid if owner.gid is not None else entry.pw_gid

    # ----------------------------------------------------------------- cancel
    def cancel(self, job_id: JobId) -> None:
        """scancel the job; if Slurm cannot be reached, poll() retries until it can."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.cancel_pending = True
            self._try_cancel(job)

    def _try_cancel(self, job: _Tracked) -> None:
        try:
            self._cli.run("scancel", [job.external_id])
        except SlurmUnavailable as exc:
            _log.warning("cannot cancel job %s yet: %s", job.job_id, exc)
            return
        except DispatchError as exc:  # e.g. already ended: poll() reports how
            _log.info("scancel of job %s: %s", job.job_id, exc)
        job.cancel_pending = False

    # ------------------------------------------------------------------- poll
    def poll(self) -> Sequence[StateChange]:
        """Read squeue (and sacct for jobs squeue no longer shows); return the jobs that ended."""
        with self._lock:
            try:
                live = self._read_squeue()
            except SlurmUnavailable as exc:
                self._site_down(str(exc))
                return []
            if self._unavailable:
                _log.info("Slurm answers again")
            self._unavailable = ""
            for job in self._jobs.values():
                if job.cancel_pending:
                    self._try_cancel(job)
            by_ext = {job.external_id: job for job in self._jobs.values()}
            orphans: dict[JobId, list[tuple[str, Marker | None]]] = {}
            for ext, seen in live.items():
                comment = seen.extra.get("comment", "")
                named = parse_marker(comment)
                if (
                    ext not in by_ext
                    and named is not None
                    and map_state(seen.state).phase is not Phase.ENDED
                ):
                    orphans.setdefault(JobId(named.job_id), []).append(
                        (ext, self._key.valid(comment))
                    )
            self._orphans = orphans
            ask_sacct = [
                job.external_id
                for job in self._jobs.values()
                if job.external_id not in live
                or map_state(live[job.external_id].state).phase is Phase.ENDED
            ]
            if self._hold:
                self._settle_holds(live)
            final = self._read_sacct(ask_sacct) if ask_sacct else {}
            changes: list[StateChange] = []
            for job in list(self._jobs.values()):
                change = self._step(job, live.get(job.external_id), final.get(job.external_id))
                if change is not None:
                    changes.append(change)
                    del self._jobs[job.job_id]
            return changes

    def _settle_holds(self, live: dict[str, _Seen]) -> None:
        """Release the held jobs gpucenter recorded as started; cancel held jobs of ours that
        it recorded otherwise (a deposed server's duplicate, a job cancelled meanwhile)."""
        assert self._observer is not None
        release: list[str] = []
        held = {
            ext for ext, seen in live.items() if seen.state == "PENDING" and seen.reason in _HELD
        }
        for job in list(self._jobs.values()):
            if job.external_id not in held:
                continue
            verdict = self._observer.recorded(job.job_id, job.external_id)
            if verdict is True:
                release.append(job.external_id)
            elif verdict is False:
                _log.warning(
                    "job %s: Slurm job %s is not the recorded start; cancelled",
                    job.job_id,
                    job.external_id,
                )
                self._try_cancel(job)
                del self._jobs[job.job_id]
        for job_id, exts in list(self._orphans.items()):
            for ext, valid in list(exts):
                # Only a job with our valid marker is ours to cancel (never a user's own).
                if valid and ext in held and self._observer.recorded(job_id, ext) is False:
                    _log.warning(
                        "job %s: held Slurm job %s nobody recorded; cancelled", job_id, ext
                    )
                    self._try_cancel(_Tracked(job_id, ext))
                    exts.remove((ext, valid))
            if not exts:
                del self._orphans[job_id]
        if release:
            try:
                self._cli.run("scontrol", ["release", ",".join(release)])
            except DispatchError as exc:  # released at the next poll
                _log.warning("releasing Slurm jobs %s failed: %s", release, exc)

    def _step(self, job: _Tracked, live: _Seen | None, final: _Seen | None) -> StateChange | None:
        seen = final or live
        if seen is None:
            job.missing += 1
            if job.missing < self._lost_after:
                return None
            return StateChange(
                job.job_id,
                JobState.FAILED,
                self._clock.now(),
                None,
                f"Slurm has no record of job {job.external_id} any more",
            )
        job.missing = 0
        mapped = map_state(seen.state, seen.exit)
        if mapped.phase is Phase.WAITING:
            reason = seen.reason if seen.reason and seen.reason != "None" else mapped.slurm
            words = describe_reason(reason) or mapped.detail
            detail = f"queued at Slurm as job {job.external_id}, {mapped.detail}: {words}"
            self._note(job, reason, detail)
            return None
        if seen.start is not None and not job.started:
            self._tell_started(job, seen.start)
        if mapped.phase is Phase.RUNNING:
            self._note(job, "", "" if mapped.slurm == "RUNNING" else mapped.detail)
            return None
        exit_code = seen.exit
        if final is None and mapped.slurm != "COMPLETED":
            exit_code = self._scontrol_exit(job.external_id)  # squeue prints no exit codes
            mapped = map_state(seen.state, exit_code)
        end = seen.end if seen.end is not None else self._clock.now()
        if not job.started:  # never ran (cancelled while queued): nothing to charge
            self._tell_started(job, end)
        assert mapped.state is not None
        detail = f"Slurm job {job.external_id}: {mapped.detail}"
        return StateChange(job.job_id, mapped.state, end, exit_status(exit_code), detail)

    def _tell_started(self, job: _Tracked, at: Instant) -> None:
        if self._observer is not None:
            try:
                self._observer.started(job.job_id, at)
            except Exception:  # the database failed: told again at the next poll
                _log.warning("recording Slurm's start of job %s failed", job.job_id, exc_info=True)
                return
        job.started = True

    def _note(self, job: _Tracked, reason: str, detail: str) -> None:
        if job.note == (reason, detail):
            return
        if self._observer is not None:
            try:
                self._observer.waiting(job.job_id, reason, detail)
            except Exception:  # the database failed: told again at the next poll
                _log.warning("recording why job %s waits failed", job.job_id, exc_info=True)
                return
        job.note = (reason, detail)

    def _site_down(self, message: str) -> None:
        if not self._unavailable:
            _log.warning("Slurm unreachable: %s", message)
        self._unavailable = message
        for job in self._jobs.values():
            self._note(
                job,
                "SiteUnavailable",
                f"the Slurm site does not answer ({message}); the job is kept and its state "
                "read again when the site is back",
            )

    def _read_squeue(self) -> dict[str, _Seen]:
        rows = self._cli.parsable(
            "squeue", ["-h", "-t", "all", "-o", "%i|%T|%r|%S|%e|%k"], _SQUEUE_FIELDS
        )
        return {
            r["id"]: _Seen(
                r["state"],
                r["reason"],
                parse_slurm_time(r["start"]),
                parse_slurm_time(r["end"]),
                extra={"comment": r["comment"]},
            )
            for r in rows
        }

    def _scontrol_exit(self, external_id: str) -> str:
        """ExitCode from slurmctld's memory, for a job that ended but is not in sacct yet."""
        try:
            text = self._cli.run("scontrol", ["-o", "show", "job", external_id])
        except DispatchError:
            return ""
        match = re.search(r"(?:^| )ExitCode=(\S+)", text)
        return match.group(1) if match else ""

    def _read_sacct(self, external_ids: Sequence[str]) -> dict[str, _Seen]:
        try:
            rows = self._cli.parsable(
                "sacct",
                [
                    "-X",
                    "-n",
                    "-P",
                    "-a",
                    "-j",
                    ",".join(external_ids),
                    "--format=JobIDRaw,State,ExitCode,Start,End,Reason",
                ],
                _SACCT_FIELDS,
            )
        except SlurmUnavailable as exc:  # accounting down: squeue still tells a lot
            _log.warning("sacct unavailable: %s", exc)
            return {}
        found: dict[str, _Seen] = {}
        for r in rows:
            # A job that has not started yet is reported by sacct with Start "Unknown".
            start = parse_slurm_time(r["start"])
            end = parse_slurm_time(r["end"])
            found[r["id"]] = _Seen(r["state"], r["reason"], start, end, r["exit"])
        return found

    # ------------------------------------------------------ restart and stop
    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Watch a job an earlier server submitted; the next poll reports where it is. Where
        Slurm still shows the job, its comment must carry a valid marker for this job (the
        database's record alone does not make a user's job ours: a restored or edited row
        could name any Slurm job id); otherwise it is refused (False) and kept in
        `refused_adoptions`. A job Slurm no longer shows (ended and purged) is watched: the
        poll then reads its end from sacct."""
        del started_at, time_limit_s, stderr_path  # Slurm keeps these itself
        if not external_id.isdigit():
            return False
        try:
            text = self._cli.run("scontrol", ["-o", "show", "job", external_id])
        except DispatchError:  # unreachable, or gone from slurmctld: the poll finds out
            text = ""
        comment = re.search(r"(?:^| )Comment=(\S*)", text) if text.strip() else None
        if text.strip():
            valid = self._key.valid(comment.group(1) if comment else "")
            if valid is None or valid.job_id != job_id:
                with self._lock:
                    self._refuse(
                        external_id,
                        f"Slurm job {external_id}, recorded for job {job_id}, carries no valid "
                        f"marker for it ({comment.group(1) if comment else 'no comment'!r}): "
                        "not adopted",
                    )
                return False
        with self._lock:
            self._jobs.setdefault(job_id, _Tracked(job_id, external_id))
        return True

    def detach(self) -> None:
        """Forget every job without touching it in Slurm: a later server adopts them."""
        with self._lock:
            self._jobs.clear()

    def running_job_ids(self) -> frozenset[JobId]:
        with self._lock:
            return frozenset(self._jobs)

    def shutdown(self) -> None:
        """Stop watching. Slurm jobs keep running (they are adopted on the next start)."""
        self.detach()


def _not_ready(exc: DispatchError) -> DispatchError:
    """sbatch's refusal as SiteNotReady where gpucenter can put it right, else as it was."""
    text = str(exc).lower()
    for marker, words in _NOT_READY:
        if marker in text:
            return SiteNotReady(f"{words} ({exc})")
    return exc


def limit_settings(cli: SlurmCli) -> tuple[int | None, int | None]:
    """(OverTimeLimit minutes, KillWait seconds) from ``scontrol show config``; None where
    Slurm does not say (UNLIMITED overtime is None: no bound is known)."""
    over: int | None = None
    kill: int | None = None
    for line in cli.run("scontrol", ["show", "config"]).splitlines():
        key, _, value = line.partition("=")
        words = value.split()
        if key.strip() == "OverTimeLimit" and words and words[0].isdigit():
            over = int(words[0])
        elif key.strip() == "KillWait" and words and words[0].isdigit():
            kill = int(words[0])
    return over, kill


def _uid_of(username: str) -> int | None:
    """The user's uid on this host, None where it has no such user."""
    try:
        return pwd.getpwnam(username).pw_uid
    except KeyError:
        return None


def _primary_gid(username: str) -> int | None:
    """The user's primary group on this (submit) host, None where it has no such user."""
    try:
        return pwd.getpwnam(username).pw_gid
    except KeyError:
        return None


def cluster_name(cli: SlurmCli) -> str:
    """The ClusterName of the cluster `cli` talks to."""
    for line in cli.run("scontrol", ["show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    raise DispatchError("scontrol show config printed no ClusterName")


_GRES_GPU = re.compile(r"gpu:(?P<type>[A-Za-z0-9_.-]+):(?P<count>\d+)")


def read_site(cli: SlurmCli, partition: str | None = None) -> tuple[Node, ...]:
    """The cluster's GPU nodes from sinfo: name, GPU type and count (the core's snapshot)."""
    args = ["-h", "-N", "-o", "%N|%G|%P"]
    if partition:
        args += ["-p", partition]
    nodes: dict[str, Node] = {}
    for r in cli.parsable("sinfo", args, ("node", "gres", "partition")):
        match = _GRES_GPU.search(r["gres"])
        if match is None or r["node"] in nodes:
            continue
        nodes[r["node"]] = Node(
            r["node"], match["type"].lower(), int(match["count"]), r["partition"].rstrip("*")
        )
    return tuple(nodes[name] for name in sorted(nodes))
