"""Registration with a welcome email: the essay's handler that "sends a welcome email".

The same sign-up as `examples.registration`, plus the email, sent through an SMTP client that
each task keeps as a resource and awaited by an `async def` topology, so a slow mail server never
holds up registrations. It is its own module, `signup`, so that the registration benchmarks keep
measuring registration alone.

How the email is sent once:

1. `register` creates the user and, in the same invocation, appends a `Welcome` to the
   `welcomes` depot (`ctx.append`): a new user always gets exactly one `Welcome` record, and a
   repeated sign-up none.
2. `send_welcome` processes each `Welcome`: it skips it if `sent` already has the email, awaits
   the SMTP server, and then marks `sent`. The mark commits with the topology's progress.
3. So an email goes out twice only if the process dies after the mail server accepted it and
   before that commit (a few milliseconds): the record is processed again after the restart. The
   message carries a `Message-ID` made from the address, so a mail system that deduplicates by
   it delivers that one once.

Set `HEADWATER_SMTP=host:port` for the server (`HEADWATER_SMTP=127.0.0.1:1025 headwater serve
examples/welcome.py`); unset, the emails are marked "not sent" instead, with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import headwater as hw
from examples.registration import EPOCH, UserSignUp

SMTP_ENV = "HEADWATER_SMTP"
SENDER = "welcome@headwater.example"
SMTP_TIMEOUT_S = 10.0


@dataclass
class Welcome:
    email: str
    timestamp_ms: int


signup = hw.Module("signup")
signups = signup.depot("signups", UserSignUp, partition_by="email")
welcomes = signup.depot("welcomes", Welcome, partition_by="email", client_appends=False)
accounts = signup.pstate("accounts", hw.Map(str, hw.Record(pwd_hash=str, registered_ms=int)))
sent = signup.pstate("sent", hw.Map(str, str))  # email -> "sent" or why not


class Mailer:
    """One task's SMTP client (aiosmtplib), connected on first use and again after a failure.

    An SMTP connection carries one message at a time, so sends take turns on it (the handlers
    awaiting them still free their task meanwhile)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._client: Any = None
        self._turn: asyncio.Lock | None = None

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib

        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            if self._client is None or not self._client.is_connected:
                host, _, port = (self.address or "").rpartition(":")
                self._client = aiosmtplib.SMTP(hostname=host, port=int(port), timeout=SMTP_TIMEOUT_S)
                await self._client.connect()
            try:
                await self._client.send_message(message)
            except aiosmtplib.SMTPServerDisconnected:
                self._client = None
                raise

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            client.close()


signup.resource("mailer", lambda task_id: Mailer(os.environ.get(SMTP_ENV)), close=lambda mailer: mailer.close())


@signup.stream(signups)
def register(ctx: hw.Context, event: UserSignUp) -> bool:
    account = ctx.pstate(accounts)[event.email]
    already_registered = account.exists()
    if not already_registered:
        account.set({"pwd_hash": event.pwd_hash, "registered_ms": event.timestamp_ms})
        ctx.append(welcomes, Welcome(event.email, event.timestamp_ms))
    return already_registered


def welcome_message(welcome: Welcome) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = welcome.email
    message["Subject"] = "Welcome!"
    digest = hashlib.sha256(welcome.email.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<welcome-{digest}@headwater.example>"  # the same on a resend: mail systems dedupe
    registered = EPOCH.timestamp() + welcome.timestamp_ms / 1000
    message.set_content(f"Hello {welcome.email}, you registered at {registered:.0f} (seconds since 1970).")
    return message


@signup.stream(welcomes, max_awaiting=50, await_timeout_s=30, retry=hw.Retry(times=3, backoff=0.2))
async def send_welcome(ctx: hw.Context, welcome: Welcome) -> str:
    mark = ctx.pstate(sent)[welcome.email]
    if mark.exists():
        return mark.get()  # a replay: this one was already handled
    mailer: Mailer = ctx.resource("mailer")
    if mailer.address is None:
        outcome = f"not sent: set {SMTP_ENV}=host:port to send emails"
    else:
        await mailer.send(welcome_message(welcome))
        outcome = "sent"
    ctx.pstate(sent)[welcome.email].set(outcome)  # after the last await: one write, with the progress
    return outcome
