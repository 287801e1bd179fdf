"""Run a command in a process group of its own and never let that group outlive the site.

    python guard.py COMMAND...

seldon-core-microservice forks gunicorn workers, a gRPC server and a metrics
server; a signal to its main process alone leaves the others running (it
then waits on them forever). The guard dies with the site (PDEATHSIG) and
passes a SIGTERM/SIGINT to the whole group (a second one kills it), then kills
what is left.
Standard library only: it runs under whichever python starts it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    if os.getppid() == 1:  # the site died before prctl took effect
        return 1
    child = subprocess.Popen(argv, start_new_session=True)

    asked = []

    def forward(signum: int, _frame: object) -> None:
        asked.append(signum)
        try:  # the first request is passed on; a second one means "now"
            os.killpg(child.pid, signum if len(asked) == 1 else signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    try:
        os.killpg(child.pid, signal.SIGKILL)  # stragglers: gRPC and metrics children
    except ProcessLookupError:
        pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
