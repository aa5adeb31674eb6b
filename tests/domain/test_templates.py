"""Job templates: validation of definitions and rendering of form values into a job."""

from __future__ import annotations

from typing import Any

import pytest

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.templates import parse_template

DDP: dict[str, Any] = {
    "name": "pytorch-ddp",
    "title": "PyTorch DDP on N nodes",
    "fields": [
        {"name": "script", "type": "string", "required": True},
        {"name": "nodes", "type": "int", "default": 1, "min": 1, "max": 64},
        {"name": "precision", "type": "choice", "choices": ["bf16", "fp32"], "default": "bf16"},
    ],
    "job": {
        "command": "torchrun --nnodes {nodes} {script} --precision {precision}",
        "nodes": "{nodes}",
        "gpus_per_node": "8",
        "time": "4h",
    },
}


def test_rendering_fills_defaults_and_quotes_command_values() -> None:
    job = parse_template(DDP).render({"script": "train.py; rm -rf /", "nodes": "2"})
    assert job == {
        "command": "torchrun --nnodes 2 'train.py; rm -rf /' --precision bf16",
        "nodes": 2,
        "gpus_per_node": 8,
        "time": "4h",
    }


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "fields.script"),
        ({"script": "t.py", "nodes": "0"}, "fields.nodes"),
        ({"script": "t.py", "nodes": "lots"}, "fields.nodes"),
        ({"script": "t.py", "precision": "fp8"}, "fields.precision"),
        ({"script": "t.py", "colour": "red"}, "fields.colour"),
    ],
)
def test_bad_form_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_template(DDP).render(values)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "template.name"),
        ({"job": {"nodes": "1"}}, "template.job"),
        ({"job": {"command": "x", "colour": "red"}}, "template.job"),
        ({"job": {"command": "run {missing}"}}, "template.job.command"),
        ({"fields": [{"name": "x", "type": "float"}]}, "template.fields[0].type"),
    ],
)
def test_bad_definitions_are_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_template(DDP | change)
    assert info.value.field == field
