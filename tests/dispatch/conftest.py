"""The single-user modes the local dispatcher's tests run in (multi-tenant: tests/security)."""

from __future__ import annotations

import pytest

from gpucenter.dispatch.local.isolation import LocalIsolation
from tests.dispatch.builders import sandbox_isolation


@pytest.fixture(params=["unsandboxed", "sandboxed"])
def mode(request: pytest.FixtureRequest) -> LocalIsolation | None:
    """Unsandboxed (a process group of the server's user) or sandboxed (bubblewrap)."""
    return sandbox_isolation() if request.param == "sandboxed" else None
