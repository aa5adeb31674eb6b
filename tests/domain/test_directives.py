"""`#GPUCENTER` directives and array ranges."""

from __future__ import annotations

import pytest

from gpucenter.domain.directives import SEALED, parse_array, parse_directives, redact_env_values
from gpucenter.domain.errors import ValidationError

SCRIPT = """#!/bin/bash
# a comment is fine
#GPUCENTER --project llm-ko -g 4
#GPUCENTER --nodes=2 --time 2h --gpu-type h100
#GPUCENTER -e A=1 --env B=two --after-ok 12,13 --array 0-3

#GPUCENTER --qos opportunistic
python train.py
#GPUCENTER --gpus 8
"""


def test_directives_before_the_first_command_are_read() -> None:
    assert parse_directives(SCRIPT) == {
        "project": "llm-ko",
        "gpus_per_node": 4,
        "nodes": 2,
        "time": "2h",
        "gpu_type": "h100",
        "env": ["A=1", "B=two"],
        "after_ok": [12, 13],
        "array": "0-3",
        "qos": "opportunistic",
    }


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("#GPUCENTER --colour blue\n", "line 1: unknown directive option '--colour'"),
        ("#!/bin/sh\n#GPUCENTER --gpus many\n", "line 2: --gpus expects a whole number"),
        ("#GPUCENTER --nodes\n", "line 1: --nodes needs a value"),
        ("#GPUCENTER--gpus 2\n", "line 1: write '#GPUCENTER --option value'"),
        ("#GPUCENTER --name 'unclosed\n", "line 1: No closing quotation"),
        ("#GPUCENTER --after-ok 1,x\n", "line 1: --after-ok expects job ids"),
    ],
)
def test_malformed_directives_name_the_line(script: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_directives(script)
    assert info.value.field == "script"
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0-3", [0, 1, 2, 3]), ("1,3,5", [1, 3, 5]), ("0-10:5", [0, 5, 10]), ("2,0-1,2", [0, 1, 2])],
)
def test_array_ranges(spec: str, expected: list[int]) -> None:
    assert parse_array(spec) == expected


@pytest.mark.parametrize("spec", ["", "a-b", "5-1", "0-4:0", "-1", "0-5000"])
def test_bad_array_ranges(spec: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_array(spec)
    assert info.value.field == "array"


@pytest.mark.parametrize(
    ("script", "stored"),
    [
        ("#GPUCENTER --env A=1\necho\n", f"#GPUCENTER --env 'A={SEALED}'\necho\n"),
        ("#GPUCENTER -e 'B=two words' -g 2\n", f"#GPUCENTER -e 'B={SEALED}' -g 2\n"),
        ("  #GPUCENTER --env=C=x=y\n", f"  #GPUCENTER '--env=C={SEALED}'\n"),
        ("#GPUCENTER -p demo\n", "#GPUCENTER -p demo\n"),  # no env: untouched
        ("echo\n#GPUCENTER --env D=1\n", "echo\n#GPUCENTER --env D=1\n"),  # not a directive
        ("#!/bin/sh\n# --env E=1\n", "#!/bin/sh\n# --env E=1\n"),  # a plain comment
    ],
)
def test_env_values_leave_the_stored_script(script: str, stored: str) -> None:
    assert redact_env_values(script) == stored
    # Every other directive reads the same, and env keeps its names.
    before, after = parse_directives(script), parse_directives(stored)
    names = [e.partition("=")[0] for e in before.pop("env", [])]
    assert [e.partition("=")[0] for e in after.pop("env", [])] == names
    assert after == before
