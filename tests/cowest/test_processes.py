"""Process supervision with real processes: SIGTERM then SIGKILL of the whole group, stale pids."""

from __future__ import annotations

import os
import signal
import sys
import time

from cowest.processes import ProcessTable, group_members

# A parent that ignores SIGTERM (as vLLM does inside torch.compile) with a child in its group.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)']); time.sleep(120)"
)


def _wait_for_members(pgid: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(group_members(pgid)) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_stop_escalates_to_sigkill_of_the_group(tmp_path):
    table = ProcessTable(tmp_path)
    record = table.start("stubborn", [sys.executable, "-c", STUBBORN], {})
    _wait_for_members(record.pid, 2)
    assert len(group_members(record.pid)) == 2
    t0 = time.monotonic()
    assert table.stop("stubborn", timeout=1.0) == "killed"
    assert time.monotonic() - t0 < 10
    assert group_members(record.pid) == []
    assert table.get("stubborn") is None and not (tmp_path / "stubborn.pid").exists()


def test_polite_process_is_stopped_with_sigterm(tmp_path):
    table = ProcessTable(tmp_path)
    record = table.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    assert table.get("sleeper").alive()
    assert (tmp_path / "sleeper.pid").read_text().strip() == str(record.pid)
    assert table.stop("sleeper", timeout=10) == "stopped"
    assert group_members(record.pid) == []


def test_a_reused_pid_is_never_signalled(tmp_path):
    table = ProcessTable(tmp_path)
    record = table.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    path = tmp_path / "sleeper.json"
    path.write_text(path.read_text().replace(str(record.create_time), str(record.create_time - 1000)))
    assert not table.get("sleeper").alive()  # same pid, other start time: not ours
    assert table.stop("sleeper") == "not running"
    assert group_members(record.pid)  # still running: we did not touch it
    os.killpg(record.pid, signal.SIGKILL)
