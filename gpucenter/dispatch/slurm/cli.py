"""Running Slurm's command-line tools (sbatch, squeue, sacct, scancel, sacctmgr, scontrol).

One transport boundary: every call goes through `SlurmCli.run`, which takes an argv list
(never a shell string, so nothing a user typed is ever parsed by a shell), runs it with a
timeout and ``TZ=UTC`` (so that the times Slurm prints are UTC, whatever the host's zone),
and turns failures into two exceptions the callers can act on:

- `SlurmUnavailable`: the controller or the accounting daemon did not answer. Transient:
  the caller keeps the job queued and retries.
- `SlurmCommandError`: Slurm answered and refused (a bad account, an impossible request).

Tests of the parsing and state mapping pass a fake `runner`; the integration tests run the
real tools.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gpucenter.dispatch.base import DispatchError, SiteUnavailable

__all__ = [
    "Runner",
    "SlurmCli",
    "SlurmCommandError",
    "SlurmUnavailable",
    "parse_parsable",
    "parse_slurm_time",
]

# What the tools print when a daemon is down or unreachable (22.05 wording).
_UNAVAILABLE_MARKERS = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "slurm_persist_conn_open",
    "problem talking to the database",
    "zero bytes were transmitted",
    "slurmdbd: connection",
    "slurm backup controller in standby mode",
    "communication connection failure",
    "unable to establish connection",
)


class SlurmCommandError(DispatchError):
    """A Slurm tool ran and failed; `stderr` says why in Slurm's words."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{argv[0]} failed (exit {returncode}): {self.stderr or 'no message'}")


class SlurmUnavailable(SlurmCommandError, SiteUnavailable):
    """The Slurm controller or accounting daemon could not be reached: retry later.

    A SiteUnavailable, so the scheduler keeps the job queued, shows why and backs off.
    """


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], str | None, Mapping[str, str], float], Result]
"""(argv, stdin text, environment, timeout seconds) -> Result. Raises TimeoutError, OSError."""


def _subprocess_runner(
    argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout_s: float
) -> Result:
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"{argv[0]} did not answer within {timeout_s:g} s") from exc
    return Result(done.returncode, done.stdout, done.stderr)


def _base_environment() -> dict[str, str]:
    """What the tools need from our environment: PATH and locale, never the server's secrets."""
    keep = {"PATH", "LANG", "LC_ALL", "HOME", "SLURM_CONF", "MUNGE_SOCKET"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return env


class SlurmCli:
    """Runs one cluster's tools. `slurm_conf` selects the cluster when a host talks to several."""

    def __init__(
        self,
        *,
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
        timeout_s: float = 30.0,
        runner: Runner | None = None,
    ) -> None:
        self._conf = slurm_conf
        self._bin = bin_dir
        self._timeout = timeout_s
        self._runner: Runner = runner or _subprocess_runner

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = _base_environment()
        if self._conf:
            env["SLURM_CONF"] = self._conf
        if extra:
            env.update(extra)
        env["TZ"] = "UTC"  # last: the times we parse are UTC
        return env

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
    ) -> str:
        """Run `tool args...`; its stdout, or SlurmUnavailable / SlurmCommandError."""
        exe = os.path.join(self._bin, tool) if self._bin else tool
        argv = [exe, *args]
        try:
            result = self._runner(argv, stdin, self.environment(env), self._timeout)
        except TimeoutError as exc:
            raise SlurmUnavailable(argv, -1, str(exc)) from exc
        except OSError as exc:  # the tool is not installed: no Slurm here at all
            raise SlurmUnavailable(argv, -1, f"cannot run {exe}: {exc}") from exc
        if result.returncode not in ok_codes:
            text = (result.stderr or result.stdout).strip()
            if any(marker in text.lower() for marker in _UNAVAILABLE_MARKERS):
                raise SlurmUnavailable(argv, result.returncode, text)
            raise SlurmCommandError(argv, result.returncode, text)
        return result.stdout

    def parsable(
        self, tool: str, args: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        """Run a tool that prints ``-P``/``-p`` style rows without a header; rows as dicts."""
        return parse_parsable(self.run(tool, args), fields)


def parse_parsable(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of ``a|b|c`` lines. The last field takes any extra ``|`` (comments may hold one)."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(fields) - 1)
        parts += [""] * (len(fields) - len(parts))
        rows.append(dict(zip(fields, parts, strict=True)))
    return rows


def parse_slurm_time(value: str) -> float | None:
    """A Slurm timestamp printed under TZ=UTC (``2026-01-02T03:04:05``) as epoch seconds.

    None for Slurm's non-times: ``Unknown``, ``N/A``, ``None``, empty.
    """
    value = value.strip()
    if not value or value in ("Unknown", "N/A", "None", "(null)"):
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC).timestamp()
