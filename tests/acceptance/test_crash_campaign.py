"""A few runs of the kill -9 campaign (`python -m bench.crash_campaign`): one per workload.

Each run kills a child process or a real server twice with SIGKILL and checks the bank against
its oracle: no acked append lost, no event stored twice, every PState as the stored events say,
and (over HTTP) no full ack, first or repeated, before its processing is visible.
"""

from __future__ import annotations

import pytest

from bench.crash_campaign import WORKLOADS, run_once


@pytest.mark.parametrize("workload", WORKLOADS)
def test_the_bank_survives_sigkill_as_the_oracle_says(workload):
    outcome = run_once(workload, seed=1)
    assert outcome.acked > 0
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert outcome.mismatches == []
    assert outcome.early_acks == []
