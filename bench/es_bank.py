"""The eventsourcing library's side of workload 4: aggregate, application, projection and views.

Kept apart from compare_bank.py because the library's single-dispatch projection reads its
handlers' type hints when the class is created, which `from __future__ import annotations`
would turn into strings.
"""

import threading
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

__all__ = ["Account", "Bank", "BalancesProjection", "PostgresBalances", "SQLiteBalances", "Tracking"]

PROJECTION_WAIT_S = 30.0
SAVE_ATTEMPTS_MAX = 20


def account_id(number: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"/accounts/{number}")


class Account(Aggregate):
    @event("Opened")
    def __init__(self, number: int, balance: int) -> None:
        self.number = number
        self.balance = balance

    @staticmethod
    def create_id(number: int, balance: int = 0) -> UUID:
        return account_id(number)

    @event("Debited")
    def debit(self, number: int, amount: int, transfer_id: str) -> None:
        self.balance -= amount

    @event("Credited")
    def credit(self, number: int, amount: int, transfer_id: str) -> None:
        self.balance += amount


class Bank(Application[UUID]):
    def open(self, numbers: range, balance: int) -> None:
        self.save(*(Account(number, balance) for number in numbers))

    def transfer(self, transfer_id: str, from_number: int, to_number: int, amount: int) -> int:
        """Debit and credit in one atomic save; the last notification id it recorded."""
        for _ in range(SAVE_ATTEMPTS_MAX):
            sender = self.repository.get(account_id(from_number))
            receiver = self.repository.get(account_id(to_number))
            if sender.balance < amount:
                raise ValueError(f"account {from_number} cannot pay {amount}")
            sender.debit(from_number, amount, transfer_id)
            receiver.credit(to_number, amount, transfer_id)
            try:
                recordings = self.save(sender, receiver)
            except IntegrityError:
                continue  # another transfer saved one of the accounts first: reload and retry
            return max(r.notification.id for r in recordings)
        raise RuntimeError(f"transfer {transfer_id} conflicted {SAVE_ATTEMPTS_MAX} times")


class Progress:
    """The highest notification id a view has committed, for clients to wait on."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.position = 0

    def advance(self, position: int) -> None:
        with self.condition:
            if position > self.position:
                self.position = position
                self.condition.notify_all()

    def wait(self, position: int) -> None:
        with self.condition:
            if not self.condition.wait_for(lambda: self.position >= position, PROJECTION_WAIT_S):
                raise TimeoutError(f"the projection did not reach notification {position} in {PROJECTION_WAIT_S}s")


class BalancesView(TrackingRecorder):
    """Balances by account number, each change committed with its tracking position."""

    progress: Progress

    def adjust(self, account: int, delta: int, tracking: Tracking) -> None:
        raise NotImplementedError

    def total(self) -> int:
        raise NotImplementedError


class PostgresBalances(PostgresTrackingRecorder, BalancesView):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.progress = Progress()
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {0}.balances (account bigint PRIMARY KEY, balance bigint NOT NULL)")
            .format(schema))
        self._upsert = SQL("INSERT INTO {0}.balances VALUES (%s, %s) ON CONFLICT (account) DO UPDATE "
                           "SET balance = {0}.balances.balance + EXCLUDED.balance").format(schema)
        self._total = SQL("SELECT coalesce(sum(balance), 0) AS total FROM {0}.balances").format(schema)

    def adjust(self, account: int, delta: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._upsert, (account, delta))
            self._insert_tracking(curs, tracking)
        self.progress.advance(tracking.notification_id)

    def total(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._total)
            row = curs.fetchone()
            assert row is not None
            return int(row["total"])


class SQLiteBalances(SQLiteTrackingRecorder, BalancesView):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.progress = Progress()

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                "CREATE TABLE IF NOT EXISTS balances (account INTEGER PRIMARY KEY, balance INTEGER NOT NULL)"]

    def adjust(self, account: int, delta: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute("INSERT INTO balances VALUES (?, ?) ON CONFLICT (account) DO UPDATE "
                      "SET balance = balance + excluded.balance", (account, delta))
            self._insert_tracking(c, tracking)
        self.progress.advance(tracking.notification_id)

    def total(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT coalesce(sum(balance), 0) FROM balances")
            return int(c.fetchone()[0])


class BalancesProjection(Projection[BalancesView]):
    name = "balances"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        pass

    @process_event.register
    def opened(self, domain_event: Account.Opened, tracking: Tracking) -> None:
        self.view.adjust(domain_event.number, domain_event.balance, tracking)

    @process_event.register
    def debited(self, domain_event: Account.Debited, tracking: Tracking) -> None:
        self.view.adjust(domain_event.number, -domain_event.amount, tracking)

    @process_event.register
    def credited(self, domain_event: Account.Credited, tracking: Tracking) -> None:
        self.view.adjust(domain_event.number, domain_event.amount, tracking)
