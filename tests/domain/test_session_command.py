"""A session's command, as the server writes it: the Unix socket by default, the TCP program
only where the dispatcher sets GPUCENTER_SESSION_TCP, and refusals that carry codes."""

from __future__ import annotations

import shlex

import pytest

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.sessions import JUPYTERLAB, TCP_BOOTSTRAP, TCP_VARIABLE, kind_named


def test_the_tcp_program_runs_only_when_the_dispatcher_says_so() -> None:
    command = JUPYTERLAB.render("/opt/jupyter/bin/python", 600)
    assert command.startswith(f'if [ "${{{TCP_VARIABLE}:-}}" = 1 ]; then exec ')
    tcp, unix = command.split("; fi; ", 1)
    assert "--ServerApp.sock=" in unix and "--ServerApp.sock=" not in tcp
    words = shlex.split(tcp.split("then ", 1)[1])
    assert words[:3] == ["exec", "/opt/jupyter/bin/python", "-c"]
    assert words[3] == TCP_BOOTSTRAP
    assert "--ServerApp.shutdown_no_activity_timeout=600" in words[4]
    compile(TCP_BOOTSTRAP, "<session>", "exec")  # the program at least parses


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda: JUPYTERLAB.render("python3", 600), "error.session_python"),
        (lambda: JUPYTERLAB.render("/usr/bin/python3", 5), "error.session_idle"),
        (lambda: kind_named("rstudio"), "error.session_kind"),
    ],
)
def test_refusals_carry_codes(call: object, code: str) -> None:
    with pytest.raises(ValidationError) as raised:
        call()  # type: ignore[operator]
    inner = raised.value.coded.values["problem"]  # type: ignore[union-attr]
    assert inner.code == code  # type: ignore[union-attr]
