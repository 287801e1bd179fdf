"""python-libjuju's Model, Application and Unit as scripts/roll-model uses them, with Juju's timing.

`Application.set_config` returns once the controller has stored the options (juju/python-libjuju
juju/application.py: set_config -> the Application facade's SetConfigs); the charm sees them only
at its next hook, which the unit agent runs some time later. Until then the unit shows the status
it had. So here a change schedules a hook `hook_delay` seconds later, and after it the charm
reconciles every `tick` seconds (update-status, pod events); each hook publishes the status the
charm computes, with a new `workload_status_since`, as Juju records a status-set.

`charm` is the cluster plus the charm's reconcile: `apply(config)` when a hook sees the options,
`status() -> (kind, message)` for the status that hook sets.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
from pathlib import Path
from typing import Any, Protocol

import yaml

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())["config"]["options"]
_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
_SEQ = itertools.count()


class JujuError(Exception):
    """python-libjuju's juju.errors.JujuError."""


class JujuAPIError(JujuError):
    """What python-libjuju raises for an error the controller answered (juju.errors.JujuAPIError)."""


class JujuApplicationConfigError(JujuError):
    """What python-libjuju raises for a config value that is not a string."""


class Charm(Protocol):
    def apply(self, config: dict[str, Any]) -> None: ...

    def status(self) -> tuple[str, str]: ...


class FakeUnit:
    """A unit as libjuju shows it: the last status a hook set, and when."""

    def __init__(self, name: str, status: tuple[str, str]) -> None:
        self.name = name
        self.publish(*status)

    def publish(self, kind: str, message: str) -> None:
        self.workload_status, self.workload_status_message = kind, message
        self.workload_status_since = _EPOCH + datetime.timedelta(milliseconds=next(_SEQ))


class FakeApplication:
    def __init__(
        self,
        name: str,
        charm: Charm,
        config: dict[str, Any],
        status: tuple[str, str],
        hook_delay: float = 0.03,
        tick: float = 0.01,
    ) -> None:
        self.name, self.charm, self.config = name, charm, dict(config)
        self.units = [FakeUnit(f"{name}/0", status)]
        self.history: list[dict] = []
        self.hook_delay, self.tick = hook_delay, tick
        self.refuse: dict[str, Exception] = {}  # option -> what the controller answers when it is set
        self.hooks_run = 0
        self._next = 0.0
        self._task: asyncio.Task | None = None

    async def get_config(self) -> dict:
        return {k: {"value": v, "source": "user"} for k, v in self.config.items()}

    async def set_config(self, config: dict) -> None:
        # python-libjuju sends strings only and raises otherwise; the controller refuses an
        # option the charm does not have.
        for key, value in config.items():
            if not isinstance(value, str):
                raise JujuApplicationConfigError(f"{key}: {value!r} is not a string")
            if key not in OPTIONS:
                raise JujuAPIError(f'unknown option "{key}"')
            if key in self.refuse:
                raise self.refuse[key]
        self.history.append(dict(config))
        self.config.update(config)
        self._changed()

    async def reset_config(self, to_default: list[str]) -> None:
        """Juju's UnsetApplicationsConfig: the options go back to their defaults (or to unset)."""
        for key in to_default:
            if key not in OPTIONS:
                raise JujuAPIError(f'unknown option "{key}"')
        self.history.append({"reset": list(to_default)})
        for key in to_default:
            if "default" in OPTIONS[key]:
                self.config[key] = OPTIONS[key]["default"]
            else:
                self.config.pop(key, None)
        self._changed()

    def _changed(self) -> None:
        """config-changed runs `hook_delay` from now; the unit keeps its status until then."""
        loop = asyncio.get_running_loop()
        self._next = loop.time() + self.hook_delay
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._hooks())

    async def _hooks(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._next - loop.time(), 0))
            if loop.time() < self._next:
                continue  # another change pushed config-changed back
            self.charm.apply(dict(self.config))
            for unit in self.units:
                unit.publish(*self.charm.status())
            self.hooks_run += 1
            self._next = loop.time() + self.tick


class FakeModel:
    name = "kubeflow"

    def __init__(self, *applications: FakeApplication) -> None:
        self.applications = {app.name: app for app in applications}

    async def disconnect(self) -> None:
        pass
