"""Child processes of the benchmark and what ``/proc`` says about them.

Every server is started in its own session (so its workers can be found and killed as a group)
and with a parent-death signal (so nothing survives a crashed or killed harness). CPU time and
peak RSS are read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` of every process in the
server's session: the master and all its workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the harness dies, the kernel kills the server.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ProcStat:
    """CPU seconds (user + system, and system alone) and peak resident memory of a set of
    processes."""

    cpu_seconds: float
    max_rss_kib: int
    total_rss_kib: int
    processes: int
    system_seconds: float = 0.0  # the kernel's share of cpu_seconds


def parse_stat_line(line: str) -> tuple[int, int, int]:
    """(session id, utime ticks, stime ticks) from one ``/proc/<pid>/stat`` line.

    The command name is in parentheses and may itself contain spaces or ``)``, so fields are
    counted from the last ``)``.
    """
    rest = line[line.rindex(")") + 2 :].split()
    return int(rest[3]), int(rest[11]), int(rest[12])


def parse_vm_hwm(status_text: str) -> int:
    """Peak resident set size in KiB (``VmHWM``) from ``/proc/<pid>/status``; 0 if absent."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def session_stat(session_id: int) -> ProcStat:
    """CPU time and peak RSS summed/maxed over the live processes of one session."""
    ticks = sys_ticks = 0
    max_rss = total_rss = count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                sid, utime, stime = parse_stat_line(f.read())
            if sid != session_id:
                continue
            with open(f"/proc/{entry.name}/status", encoding="utf-8", errors="replace") as f:
                rss = parse_vm_hwm(f.read())
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we were reading it
        ticks += utime + stime
        sys_ticks += stime
        max_rss = max(max_rss, rss)
        total_rss += rss
        count += 1
    return ProcStat(ticks / CLOCK_TICKS, max_rss, total_rss, count, sys_ticks / CLOCK_TICKS)


class ChildFailed(RuntimeError):
    """A child process exited or did not become ready; the message ends with its log's tail."""


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# The watchdog outlives a harness killed with SIGKILL: when its stdin closes (the harness exited,
# however it did), it kills the sessions it was told about and has not been told to forget.
_WATCHDOG = """
import os, signal, sys
live = set()
for line in sys.stdin:
    pid = int(line)
    if pid > 0:
        live.add(pid)
    else:
        live.discard(-pid)
for pid in live:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class Children:
    """Starts server processes and kills every one of them (and its session) on exit.

    Three nets: :meth:`stop_all` on exit (SIGTERM, then SIGKILL); a parent-death signal on each
    server process; and a watchdog process that kills the servers' sessions if the harness dies
    without cleaning up (nginx workers, for one, do not die with their master).
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _tell_watchdog(self, value: int) -> None:
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG],
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
        stdin = self._watchdog.stdin
        if stdin is not None:
            stdin.write(f"{value}\n".encode())
            stdin.flush()

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session with stdout and stderr going to ``log``."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._procs.append(proc)
        self._tell_watchdog(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM the process's session, then SIGKILL what is left after ``timeout`` seconds."""
        if proc in self._procs:
            self._procs.remove(proc)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
            # The session id is the pid of the process we started: only its own group is hit.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if not _session_alive(proc.pid):
                break
        self._tell_watchdog(-proc.pid)

    def stop_all(self) -> None:
        """Stop every child still running, newest first, then let the watchdog exit."""
        for proc in reversed(list(self._procs)):
            self.stop(proc)
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            self._watchdog.wait(10)
            self._watchdog = None


def _session_alive(session_id: int) -> bool:
    return session_stat(session_id).processes > 0


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0
) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; ChildFailed if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChildFailed(f"exited with status {proc.returncode}:\n{log_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ChildFailed(f"not listening on 127.0.0.1:{port} after {timeout:.0f}s:\n{log_tail(log)}")
