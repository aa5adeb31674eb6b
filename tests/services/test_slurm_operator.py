"""`gpucenter slurm sync|usage|site` through services/slurm/operator.py, against recorded
Slurm tool output (no cluster): what the CLI prints, what it runs, and how a failing tool is
said (the tool's own message, exit status 1), now that the CLI never imports dispatch/.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucenter.cli.main import app as cli_app
from gpucenter.config import get_settings
from gpucenter.dispatch.slurm.cli import Result, SlurmCli
from gpucenter.domain.errors import SiteError
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm import operator


class FakeSlurm:
    """Answers each tool from a table; records every command line it was given."""

    def __init__(self, answers: dict[str, Result]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: object, timeout: float
    ) -> Result:
        self.calls.append(list(argv))
        tool = Path(argv[0]).name
        if tool == "sacctmgr" and "-i" in argv:
            return Result(0, "", "")
        return self.answers.get(tool, Result(0, "", ""))


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeSlurm]:
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", url)
    monkeypatch.setenv("GPUCENTER_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    fake = FakeSlurm(
        {
            "scontrol": Result(0, "ClusterName = testcluster\nSlurmctldPort = 6817\n", ""),
            "sinfo": Result(0, "n1|gpu:h100:8(S:0-1)|batch*\nn2|(null)|batch*\n", ""),
        }
    )
    monkeypatch.setattr(SlurmSettings, "cli", lambda self: SlurmCli(runner=fake))
    yield fake
    get_settings.cache_clear()


def test_sync_shows_the_plan_and_applies_it_on_request(slurm: FakeSlurm) -> None:
    shown = CliRunner().invoke(cli_app, ["slurm", "sync"])
    assert shown.exit_code == 0, shown.output
    assert "sacctmgr -i add account gpucenter" in shown.output
    assert "change(s); run with --apply to make them" in shown.output
    assert not any("-i" in call for call in slurm.calls)  # nothing changed on the cluster

    applied = CliRunner().invoke(cli_app, ["slurm", "sync", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "change(s) to testcluster" in applied.output
    assert any(call[:2] == ["sacctmgr", "-i"] for call in slurm.calls)


def test_site_prints_a_site_file_from_sinfo(slurm: FakeSlurm) -> None:
    done = CliRunner().invoke(cli_app, ["slurm", "site", "--name", "hpc"])
    assert done.exit_code == 0, done.output
    assert done.output == (
        "site: hpc\nnodes:\n- name: n1\n  gpus: 8\n  gpu_type: h100\n  block: batch\n"
    )


def test_a_failing_tool_is_a_site_error_with_its_message(slurm: FakeSlurm) -> None:
    slurm.answers["sinfo"] = Result(1, "", "sinfo: error: Invalid partition name specified")
    with pytest.raises(SiteError, match="Invalid partition name"):
        operator.describe_site(SlurmSettings(), "hpc")
    done = CliRunner().invoke(cli_app, ["slurm", "site"])
    assert done.exit_code == 1
    assert "Invalid partition name specified" in done.output


def test_usage_ingest_reads_sacct_and_reports(slurm: FakeSlurm) -> None:
    settings = SlurmSettings()
    sessions = session_factory(make_engine(get_settings().effective_database_url))
    now = datetime(2026, 11, 1, 11, tzinfo=UTC)
    report = operator.ingest_site_usage(sessions, settings, now.replace(hour=9), now)
    assert report.charged == [] and report.already == 0
    assert any(Path(call[0]).name == "sacct" for call in slurm.calls)
    done = CliRunner().invoke(cli_app, ["slurm", "usage", "--hours", "2"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("charged 0 job(s), corrected 0, flagged 0, 0 already charged")


def test_flags_lists_the_outside_submissions_the_ingest_found(slurm: FakeSlurm) -> None:
    from gpucenter.persistence.tables_ops import UsageFlagRow
    from gpucenter.services.identity import accounts

    sessions = session_factory(make_engine(get_settings().effective_database_url))
    now = datetime(2026, 11, 1, 11, tzinfo=UTC)
    with sessions.begin() as s:
        accounts.create_organisation(s, "Alpha University", "university", now)
        project = accounts.create_project(s, "alpha", "Alpha University", now)
        s.add(
            UsageFlagRow(
                source="slurm:testcluster:77",
                project_id=project.id,
                account="gpucenter_alpha",
                username="mallory",
                gpu_type="h100",
                gpu_seconds=7200.0,
                ended_at=now,
                reason="ran outside gpucenter; charged to the project's allocation",
                created_at=now,
            )
        )
    (job,) = operator.outside_jobs(sessions, "alpha")
    assert (job.source, job.project, job.username, job.gpu_hours) == (
        "slurm:testcluster:77",
        "alpha",
        "mallory",
        2.0,
    )
    assert operator.outside_jobs(sessions, "beta") == []
    done = CliRunner().invoke(cli_app, ["slurm", "flags"])
    assert done.exit_code == 0, done.output
    assert "slurm:testcluster:77  alpha  mallory  2.000 GPU-h" in done.output
    assert done.output.rstrip().endswith("1 job(s) run outside gpucenter")
