"""Runs examples/python/tasks.py, the whole task cycle, against the test server: it must end
with every callback received and verified by ``standardwebhooks``."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_task_example_runs_the_whole_cycle():
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "tasks.py")],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "4 results verified, 0 rejected" in lines, run.stdout
    assert any(l.startswith("cat.png: succeeded") and "cat-small.png" in l for l in lines), run.stdout
    assert any(l.startswith("broken.png: failed") and "not an image" in l for l in lines), run.stdout
    assert all("callback delivered" in l for l in lines if l.endswith(")")), run.stdout
