"""The README's main command as a user runs it: from a bare folder with no data directory
configured, no sibling data folder and no network, the quick demo completes with a report made
from the embedded evaluation sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wensu.demo import build_steps
from wensu.resources import default_fasta

REPO = Path(__file__).resolve().parents[1]


def _user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENSU_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),  # an empty per-user cache
        WENSU_OFFLINE="1",
        # any attempt at the network fails fast instead of reaching out
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
    )
    return env


@pytest.mark.slow
def test_quick_demo_from_a_bare_folder(tmp_path):
    work = tmp_path / "user" / "project"  # no ../shared beside it
    work.mkdir(parents=True)
    completed = subprocess.run(
        [sys.executable, "-P", "-m", "wensu.demo", "--quick", "--output", "out"],
        cwd=work,
        env=_user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = (work / "out" / "report" / "report.md").read_text()
    assert "embedded evaluation sample" in report
    assert "SS3" in report and "contact" in report.lower()
    assert "shared" not in (completed.stdout + completed.stderr).lower()
    assert not (tmp_path / "cache" / "wensu" / "data").exists()  # nothing was fetched


def test_quick_steps_are_the_readme_commands(tmp_path):
    steps = dict(build_steps(tmp_path, default_fasta(), 50, quick=True))
    assert list(steps) == ["preprocess", "train", "embed", "evaluate"]
    assert Path(steps["evaluate"][0]).name == "wensu-eval"
    assert "subset=fast" in steps["evaluate"]


def test_no_product_message_names_a_shared_folder():
    offenders = []
    for folder in ("wensu", "conf", "preprocessing"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".yaml") and "shared/data" in path.read_text():
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
