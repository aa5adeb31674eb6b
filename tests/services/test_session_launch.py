"""An interactive session's secret reaches its job at launch only: derived from the server's
key, never stored in the job's row, and given to no ordinary job."""

from __future__ import annotations

from pathlib import Path

from gpucenter.config import Settings
from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import JobOwner
from gpucenter.domain.sessions import JUPYTERLAB, TOKEN_VARIABLE, kind_of_template
from gpucenter.persistence.tables import JobRow
from gpucenter.services.scheduling.launch import launch_request
from gpucenter.services.sessions.secret import session_key, session_token


def _row(job_id: int, template: str | None) -> JobRow:
    return JobRow(
        id=job_id,
        project_id=1,
        user_id=1,
        site_id=1,
        name="s",
        command="true",
        gpu_type="h100",
        gpus_per_node=1,
        nodes=1,
        time_limit_s=600,
        env={"MINE": "1"},
        qos="normal",
        template=template,
        runs=0,
    )


def test_a_session_gets_its_secret_at_launch_and_an_ordinary_job_does_not(
    tmp_path: Path,
) -> None:
    key = session_key(Settings(var_dir=tmp_path))
    place = (NodeGpus("local", (0,)),)
    session = _row(7, JUPYTERLAB.template)
    request = launch_request(session, "p", JobOwner("ann"), place, session_key=key)
    assert request.env[TOKEN_VARIABLE] == session_token(key, 7)
    assert TOKEN_VARIABLE not in session.env  # not written back to the row
    plain = launch_request(_row(8, "steps"), "p", JobOwner("ann"), place, session_key=key)
    assert TOKEN_VARIABLE not in plain.env
    assert session_token(key, 7) != session_token(key, 8)


def test_the_key_is_the_servers_private_file_and_stays_the_same(tmp_path: Path) -> None:
    key = session_key(Settings(var_dir=tmp_path))
    path = tmp_path / "secrets" / "session-key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert len(key) >= 32 and path.read_bytes() == key
    assert kind_of_template("session:nope") is None and kind_of_template(None) is None
