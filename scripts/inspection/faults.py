"""Named crash points, so a test can kill the service exactly where a crash hurts most.

``PREDICT_FAULT=<name>`` in the environment makes the service SIGKILL itself when it reaches
that point: a window a test could otherwise only hit by luck with a sleep. Unset (always, in
production), ``point()`` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PREDICT_FAULT"
AFTER_OUTBOX_BEFORE_MOVE = "after-outbox-before-move"  # the result is stored, the photo not yet filed


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
