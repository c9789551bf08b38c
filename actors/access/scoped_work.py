"""Schedules, workflow runs and sequence loading as one non-super caller sees them: the
pieces `ScopedHub` (actors.access.scoped) hands the workflow routes in place of the hub's own
objects. Each exposes only what is written out here; anything else is refused."""

from __future__ import annotations

from typing import Any

from actors.access.users import AccessDenied


class _Narrow:
    """Fails closed like ScopedHub: an attribute not written out is refused (403)."""

    def __getattr__(self, name: str) -> Any:
        raise AccessDenied(f"not available to this user ({name})")


class ScopedWorkflows(_Narrow):
    """Owns nothing: the coordinator's WorkflowRunner for a caller reaching ``clients``.
    A workflow it starts belongs to those clients (its target resolves among their phones,
    the workflow is theirs or shared); it lists and reads only executions of theirs."""

    def __init__(self, runner: Any, clients: frozenset[int]) -> None:
        self._runner = runner
        self._clients = clients

    async def start(self, name: str, target: str) -> dict:
        return await self._runner.start(name, target, clients=self._clients)

    async def recent(self, limit: int = 50) -> list[dict]:
        return await self._runner.recent(limit, clients=self._clients)

    async def view(self, workflow_execution_id: int) -> dict:
        return await self._runner.view(workflow_execution_id, clients=self._clients)


class ScopedSchedules(_Narrow):
    """Owns nothing: the schedule service's workflow runner, scoped (the only part of the
    service the workflow routes reach; the schedule routes go through ScopedHub's methods)."""

    def __init__(self, service: Any, clients: frozenset[int]) -> None:
        self.workflows = ScopedWorkflows(service.workflows, clients)


class SequenceLoader(_Narrow):
    """Owns nothing: the run manager's ``sequence(name)`` alone, so a definition's route
    can check that its sequence loads (the library and the recordings are the farm's)."""

    def __init__(self, runs: Any) -> None:
        self._runs = runs

    def sequence(self, name: Any) -> Any:
        return self._runs.sequence(name)
