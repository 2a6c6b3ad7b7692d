"""Fencing a task's own side effects with the claim's token.

A conductor can lose its claim while a task is still running (it stalled past
its lease, or its ZooKeeper session expired). The board then rejects
everything the stale run writes to the board, but the task's writes to *other*
systems are the task's business. The pattern: pass the claim's fencing token
along with every external write, and let the external system refuse a token
lower than the highest it has seen for that resource.

``conductor.context.current()["fencing_token"]`` is the token of the claim the
task runs under (``job_id`` is there too). The toy ledger below stands for a
database row with a ``fence`` column updated with
``UPDATE ... SET balance = ?, fence = ? WHERE id = ? AND fence <= ?``.
"""

from __future__ import annotations

import threading

from conductor import context, task
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()


class StaleWrite(Exception):
    """Raised by the ledger when a write carries a token older than one it has seen."""


class FencedLedger:
    """An external store that accepts a write only with a token >= the last one seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.balances: dict[str, int] = {}
        self.fences: dict[str, int] = {}

    def credit(self, account: str, amount: int, token: int) -> int:
        with self._lock:
            if token < self.fences.get(account, 0):
                raise StaleWrite(f"account {account}: token {token} < {self.fences[account]}")
            self.fences[account] = token
            self.balances[account] = self.balances.get(account, 0) + amount
            return self.balances[account]


LEDGER = FencedLedger()


class Credit(task.Task):
    """Credit an account, fenced by the job's claim token."""

    def execute(self, account: str, amount: int) -> int:
        token = context.current()["fencing_token"]
        return LEDGER.credit(account, amount, token)


@FLOWS.register("credit")
def credit_flow() -> linear_flow.Flow:
    """One fenced write to the ledger."""
    return linear_flow.Flow("credit").add(Credit(provides="balance"))
