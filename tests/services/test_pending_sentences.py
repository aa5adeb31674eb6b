"""Every wait reason a job can have gets its sentence on the job page and in `job show`: a
reason added without one (Held, SiteNotReady once) made the job page answer 500."""

from __future__ import annotations

from gpucenter.domain.jobs import WaitReason
from gpucenter.domain.messages import ENGLISH
from gpucenter.services.scheduling.pending import _SENTENCES


def test_every_wait_reason_has_a_sentence_in_english() -> None:
    assert set(_SENTENCES) == set(WaitReason)
    assert [code for code in _SENTENCES.values() if code not in ENGLISH] == []
