"""A forked child calls ``start_afresh`` of everything registered that still lives."""

from __future__ import annotations

import gc
import os

import pytest
from support import in_forked_child

from flask_wechat_qr.forked_child import start_afresh_in_forked_child

#: Who started afresh, in this process.
started: list[str] = []


class Holder:
    def __init__(self, name: str) -> None:
        self.name = name

    def start_afresh(self) -> None:
        started.append(self.name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_afresh_what_is_registered_and_alive() -> None:
    kept, gone = Holder("kept"), Holder("gone")
    start_afresh_in_forked_child(kept)
    start_afresh_in_forked_child(gone)
    del gone
    gc.collect()  # held weakly: it went with its owner
    assert in_forked_child(lambda: started == ["kept"]) == 0
    assert started == [] and kept.name == "kept"  # the parent keeps its own
