"""Run scripts/local-site as a user would, in the foreground of a child process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .procs import processes_with_env
from .server_process import ROOT, free_port


@dataclass
class SiteProcess:
    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_lines: int = 1, timeout: float = 180.0) -> SiteProcess:
        cmd = [sys.executable, str(ROOT / "scripts" / "local-site"), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True).start()
        self.wait_for(lambda: sum(line.startswith("ready:") for line in self.out) >= ready_lines, timeout)
        return self

    @staticmethod
    def _pump(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                time.sleep(0.3)  # let the pumps drain
                raise RuntimeError(f"local-site exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"local-site: condition not met in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return "\n".join(self.out + self.err)[-6000:]

    def reload(self, *sets: str) -> None:
        args = [sys.executable, str(ROOT / "scripts" / "local-site"), "reload", "--port", str(self.port)]
        for s in sets:
            args += ["--set", s]
        subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT)

    def reload_with(self, *args: str) -> subprocess.CompletedProcess:
        """`local-site reload` with any arguments (--promote APP, --abort APP, --reset ...)."""
        cmd = [sys.executable, str(ROOT / "scripts" / "local-site"), "reload", "--port", str(self.port), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0


def processes_of_site(port: int) -> list[str]:
    """Live processes the site started (they all inherit LOCAL_SITE_STATE=<its state dir>)."""
    marker = f"LOCAL_SITE_STATE={ROOT / '.local-site' / str(port)}"
    return [f"{pid}: {cmd[:200]}" for pid, cmd in processes_with_env(marker)]
