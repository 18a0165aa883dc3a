"""User registration, log-first: the example from the essay that started headwater.

A request handler appends a sign-up event and waits for the result. The topology checks whether
the email is taken, registers the user and counts sign-ups per day — both writes land together —
and returns whether the user already existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec

import headwater as hw

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The last millisecond a datetime can hold (9999-12-31T23:59:59.999Z). A sign-up outside
# [epoch, this] is refused as a SchemaError when appended, not left to fail in the handler.
TIMESTAMP_MS_MAX = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)


@dataclass
class UserSignUp:
    email: str
    pwd_hash: str
    timestamp_ms: Annotated[int, msgspec.Meta(ge=0, le=TIMESTAMP_MS_MAX)]


registration = hw.Module("registration")

registrations = registration.depot("registrations", UserSignUp, partition_by="email")

users = registration.pstate("users", hw.Map(str, hw.Record(pwd_hash=str, registered_ms=int)))
# Sign-ups are counted on the task that registers the user, so both writes share one atomic batch;
# the query below adds the per-task counts up.
signups = registration.pstate("signups", hw.Record(by_day=hw.Map(str, int, subindexed=True)))


@registration.stream(registrations)
def register(ctx: hw.Context, signup: UserSignUp) -> bool:
    user = ctx.pstate(users)[signup.email]
    already_registered = user.exists()
    if not already_registered:
        user.set({"pwd_hash": signup.pwd_hash, "registered_ms": signup.timestamp_ms})
        day = (EPOCH + timedelta(milliseconds=signup.timestamp_ms)).date().isoformat()  # exact, unlike a float
        ctx.pstate(signups)["by_day"][day].increment()
    return already_registered


@registration.step
def local_signups(ctx: hw.Context, day: str) -> int:
    return ctx.pstate(signups)["by_day"][day].get(0)


@registration.query
def signups_on(ctx: hw.QueryContext, day: str) -> int:
    return sum(ctx.call_all(local_signups, day))
