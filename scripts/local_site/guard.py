"""Run a command inside this process group and never let the group outlive the site.

    python guard.py COMMAND...

The site starts the guard as the leader of a new process group; the command
(seldon-core-microservice, which forks gunicorn workers, a gRPC server and a
metrics server) runs in that same group, so one ``killpg`` of the guard's pid
reaches every process of the server, even after the guard itself is gone.
The guard dies with the site (PDEATHSIG) and passes a SIGTERM/SIGINT to the
whole group (a second one kills it), then kills what is left.
Standard library only: it runs under whichever python starts it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def signal_group(signum: int) -> None:
    """Send ``signum`` to every process of the group but this one (it is only passing it on)."""
    if signum == signal.SIGKILL:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the guard goes too; nothing is left to clean up
        return
    previous = signal.signal(signum, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signum)
    finally:
        signal.signal(signum, previous)


def others_in_group() -> list[int]:
    """Live pids of this process group, this process excluded (read from /proc)."""
    me, group = os.getpid(), os.getpgrp()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # state, ppid, pgrp
            pids.append(int(entry))
    return pids


def main(argv: list[str]) -> int:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    if os.getppid() == 1:  # the site died before prctl took effect
        return 1

    asked: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        asked.append(signum)
        if child is not None:  # the first request is passed on; a second one means "now"
            signal_group(signum if len(asked) == 1 else signal.SIGKILL)

    # Installed before the command starts: a stop that arrives while it starts is not lost.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    child = subprocess.Popen(argv)
    if asked:
        signal_group(asked[0])
    code = child.wait()
    for pid in others_in_group():  # stragglers: gRPC and metrics children
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
