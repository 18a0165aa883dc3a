"""The registration example's welcome email, sent to a real SMTP server (aiosmtpd) on loopback.

Each new user gets one email, a repeated sign-up none; with no server configured the emails are
marked not sent; and after a worker is killed mid-way every user still gets one, a second one
only for an email the server had accepted just before the kill (the documented window).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

import headwater as hw
from examples.registration import UserSignUp
from examples.welcome import SMTP_ENV, signup
from tests.clusters import CLUSTER_KINDS, open_cluster

WAIT_S = 30.0


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's hook
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        text = envelope.content.decode("utf8", "replace")
        message_id = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                           if line.lower().startswith("message-id:")), "")
        with self._lock:
            self.messages.extend((rcpt, message_id) for rcpt in envelope.rcpt_tos)
        return "250 OK"

    def recipients(self) -> list[str]:
        with self._lock:
            return [rcpt for rcpt, _ in self.messages]


@pytest.fixture
def smtp(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv(SMTP_ENV, f"127.0.0.1:{port}")
    try:
        yield inbox
    finally:
        controller.stop()


def wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_each_new_user_gets_one_welcome_email(smtp, tmp_path, kind):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(signup, tasks=2)
        signups = cluster.depot("signup", "signups")
        emails = [f"user{i}@example.com" for i in range(20)]
        for email in emails:
            assert signups.append(UserSignUp(email, "h", 1_700_000_000_000))["register"] is False
        assert signups.append(UserSignUp(emails[0], "h", 1))["register"] is True  # already registered: no email
        wait_for(lambda: len(smtp.recipients()) >= len(emails), "the emails")
        time.sleep(0.3)
        assert sorted(smtp.recipients()) == sorted(emails)
        assert len({message_id for _, message_id in smtp.messages}) == len(emails)
        sent = cluster.pstate("signup", "sent")
        assert all(sent[email].get() == "sent" for email in emails)


def test_without_a_server_the_emails_are_marked_not_sent(monkeypatch, cluster):
    monkeypatch.delenv(SMTP_ENV, raising=False)
    cluster.deploy(signup, tasks=1)
    cluster.depot("signup", "signups").append(UserSignUp("ada@example.com", "h", 0))
    mark = wait_for(lambda: cluster.pstate("signup", "sent")["ada@example.com"].get(), "the mark")
    assert mark.startswith("not sent") and SMTP_ENV in mark


def test_after_a_worker_is_killed_every_user_still_gets_an_email(smtp, tmp_path):
    emails = [f"late{i}@example.com" for i in range(60)]
    with hw.LocalCluster(tmp_path / "data", workers=2) as cluster:
        cluster.deploy(signup, tasks=2)
        signups = cluster.depot("signup", "signups")
        killed = False
        for i, email in enumerate(emails):
            if i == 20 and not killed:
                pid = next(t["pid"] for t in cluster.status()["signup"] if t["worker"] == 1)
                os.kill(pid, signal.SIGKILL)
                killed = True
            for _ in range(600):
                try:
                    signups.append(UserSignUp(email, "h", 1), idempotency_key=email, timeout=10)
                    break
                except (hw.Unavailable, hw.AckTimeout):
                    time.sleep(0.05)
        wait_for(lambda: set(smtp.recipients()) >= set(emails), "an email to every user")
        sent = cluster.pstate("signup", "sent")
        wait_for(lambda: all(sent[email].get() == "sent" for email in emails), "every mark")
    duplicates = len(smtp.recipients()) - len(set(smtp.recipients()))
    # A second email only for what the server accepted just before the kill, and never more than the
    # sends a task may have in flight.
    assert duplicates <= 50, duplicates
