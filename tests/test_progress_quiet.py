"""Progress bars draw on a terminal and stay quiet in a redirected log."""

from __future__ import annotations

import io
import sys

import pytest

from wensu.progress import interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "enabled", "drawn"), [
    (io.StringIO(), True, False),  # redirected: nothing, even when asked for
    (_Terminal(), True, True),
    (_Terminal(), False, False),  # switched off (progress=false)
])  # fmt: skip
def test_bar_draws_only_on_a_terminal_when_enabled(monkeypatch, stream, enabled, drawn):
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(2000), enabled=enabled, mininterval=0):
        pass
    assert bool(stream.getvalue()) is drawn
    assert stream.getvalue().count("\r") < 3000


def test_closed_stderr_counts_as_not_interactive(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert interactive() is False
