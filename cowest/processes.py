"""Background processes with pid files and logs under COWEST_HOME/run/.

Each process is started in its own session (so it leads a process group holding all of vLLM's
worker processes) and recorded as `<name>.pid` plus `<name>.json` (argv, port, model, log).
A record is trusted only when the pid is alive *and* has the recorded start time, so a reused
pid never gets signalled.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


class StackError(RuntimeError):
    """A part of the stack cannot be started or stopped; the message says what to do."""


@dataclass
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    port: int | None = None
    model: str | None = None
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


class ProcessTable:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def _json(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _pid(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str], **meta) -> ProcessRecord:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record = ProcessRecord(name, proc.pid, psutil.Process(proc.pid).create_time(), argv, str(log), **meta)
        self._json(name).write_text(json.dumps(asdict(record), indent=2))
        self._pid(name).write_text(f"{proc.pid}\n")
        return record

    def get(self, name: str) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads(self._json(name).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.json")) if self.run_dir.exists() else []

    def forget(self, name: str) -> None:
        self._json(name).unlink(missing_ok=True)
        self._pid(name).unlink(missing_ok=True)

    def stop(self, name: str, timeout: float = 20.0) -> str:
        """SIGTERM the process group, SIGKILL it after `timeout`; returns what it took."""
        record = self.get(name)
        if record is None:
            return "not running"
        outcome = "not running"
        if record.alive():
            outcome = "stopped"
            _signal_group(record.pid, signal.SIGTERM)
            if not _wait_group_gone(record.pid, timeout):
                outcome = "killed"  # e.g. vLLM inside torch.compile ignores SIGTERM
                _signal_group(record.pid, signal.SIGKILL)
                _wait_group_gone(record.pid, 10.0)
        self.forget(name)
        return outcome

    def kill(self, name: str) -> bool:
        """SIGKILL the process group at once (a crash, as the chaos tests make one); False when
        nothing was running."""
        record = self.get(name)
        if record is None or not record.alive():
            return False
        _signal_group(record.pid, signal.SIGKILL)
        _wait_group_gone(record.pid, 10.0)
        self.forget(name)
        return True


async def wait_until_ready(
    table: ProcessTable,
    probes: dict[str, Callable[[], Awaitable[bool]]],
    timeout: float,
    on_ready: Callable[[str], None] = lambda name: None,
) -> None:
    """Poll each named process's probe until it answers; raise with its last log lines when it
    exits or when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    pending = dict(probes)
    while pending:
        for name, probe in list(pending.items()):
            record = table.get(name)
            if record is None or not record.alive():
                raise StackError(
                    f"{name} exited while starting. Last lines of {table.log_path(name)}:\n"
                    + tail(table.log_path(name))
                )
            if await probe():
                del pending[name]
                on_ready(name)
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise StackError(
                f"{name} was not ready after {timeout:.0f}s. Last lines of "
                f"{table.log_path(name)}:\n" + tail(table.log_path(name))
            )
        if pending:
            await asyncio.sleep(0.5)


def tail(path: str | Path, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


def group_pss_mb(pgid: int) -> float | None:
    """Proportional set size of a whole process group (server + engine + workers), in MiB."""
    total = 0
    for proc in group_members(pgid):
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return round(total / 2**20, 1) if total else None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_members(pgid):
            return True
        time.sleep(0.2)
    return False


def _reap(pid: int) -> None:
    """Collect the exit status when the caller itself started the process (else it stays a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
