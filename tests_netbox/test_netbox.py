"""NetBox with netbox-branching, stock and with the adapter, at each entry point.

Each test runs one scenario both ways, at the ``CONN_MAX_AGE`` where it
shows something, and asserts both: stock's figures are the bug this package
exists for (docs/netbox.md shows them), the adapter's that it is gone. The
server's log must show the adapter's branch connections opened, so that "0
left" is never a counting artefact, and every branch read checks it read its
own branch's site (tests_netbox/jobs.py), so a wrong schema fails.
"""

from __future__ import annotations

import pytest

from tests_netbox import scenarios
from tests_netbox.instance import BRANCHES
from tests_netbox.instance import CAP
from tests_netbox.instance import CLOSING
from tests_netbox.instance import PLAIN
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting

# NetBox's documented value: connections persist between requests and jobs.
PERSISTENT = 300
# This process enqueues the jobs (NetBox's own Job records need NetBox).
pytestmark = pytest.mark.usefixtures("netbox_process")


def both(max_age: int) -> tuple[Setting, Setting]:
    stock, adapter = (Setting(adapter=a, conn_max_age=max_age) for a in (False, True))
    return stock, adapter


def test_http_persistent(netbox: NetBox) -> None:
    """Stock keeps a connection per thread and branch until the server is out of slots."""
    allowance = scenarios.THREADS * CAP
    stock, adapter = (
        scenarios.http(netbox, s, allowance, scenarios.REQUESTS) for s in both(PERSISTENT)
    )
    scenarios.record("HTTP, gunicorn gthread", PERSISTENT, stock, adapter)
    assert stock.failed > 0
    assert stock.left > allowance
    assert adapter.opened > 0
    assert (adapter.failed, adapter.eof) == (0, 0)
    assert adapter.left <= allowance


def test_http_closes_at_conn_max_age_0(netbox: NetBox) -> None:
    """The adapter closes every branch connection at the end of its request.

    Stock does too at 0 (netbox-branching's own request receivers): not run.
    """
    setting = Setting(adapter=True, conn_max_age=0)
    adapter = scenarios.http(netbox, setting, allowance=0, requests=scenarios.CLOSED_REQUESTS)
    scenarios.record("HTTP, gunicorn gthread", 0, None, adapter)
    assert adapter.opened > 0
    assert (adapter.failed, adapter.left, adapter.eof) == (0, 0, 0)


def test_forking_worker(netbox: NetBox) -> None:
    """Stock job processes exit with their connections open: the server logs an EOF each."""
    stock, adapter = (scenarios.forking_worker(netbox, s) for s in both(PERSISTENT))
    scenarios.record("rqworker, forking", PERSISTENT, stock, adapter)
    # A job's connection lives as long as the job: the sampler may miss it
    # (peak 0 seen in CI on both sides); the server's log shows each.
    assert stock.failed == 0
    assert stock.eof >= stock.total
    assert adapter.opened > 0
    assert (adapter.failed, adapter.left, adapter.eof) == (0, 0, 0)


def test_in_process_worker_and_job_timeout(netbox: NetBox) -> None:
    """Stock keeps every branch it served, even at CONN_MAX_AGE 0; a timed-out query runs on."""
    (stock, stock_timeout), (adapter, adapter_timeout) = (
        scenarios.in_process_worker(netbox, s, allowance=0) for s in both(0)
    )
    scenarios.record("rqworker, in-process", 0, stock, adapter)
    scenarios.record("job_timeout mid-query, in-process", 0, stock_timeout, adapter_timeout)
    assert (stock.failed, stock.left) == (0, BRANCHES)
    assert stock_timeout.failed > 0
    assert stock_timeout.notes[-1] == "1 query left running"
    assert adapter.opened > 0
    assert (adapter.failed, adapter.left, adapter.eof) == (0, 0, 0)
    assert adapter_timeout.notes == ["0 query left running"]  # and no error noted
    assert (adapter_timeout.failed, adapter_timeout.left, adapter_timeout.eof) == (0, 0, 0)


def test_call_command(netbox: NetBox) -> None:
    """No request boundary in a command: stock keeps every branch, whatever CONN_MAX_AGE says."""
    stock, adapter = (scenarios.commands(netbox, s) for s in both(0))
    for name in adapter:
        scenarios.record(name, 0, stock[name], adapter[name])
    for figures in stock.values():
        assert (figures.failed, figures.left) == (0, BRANCHES)
    plain, closing = adapter[PLAIN], adapter[CLOSING]
    # No boundary closes a plain command's connections; the cap bounds them.
    assert (plain.failed, plain.peak, plain.left) == (0, CAP, CAP)
    assert (closing.failed, closing.peak) == (0, 0)
