"""NetBox with netbox-branching, stock and with the adapter, at CONN_MAX_AGE 0 and 300.

Each test runs one scenario both ways and asserts the adapter's figures;
stock's are measured in the same run and printed beside them (they are the
bug this package exists for, not a property to assert). Both ways must have
opened branch connections, so that "0 left" is never a counting artefact.
"""

from __future__ import annotations

import pytest

from tests_netbox import scenarios
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting

CONN_MAX_AGES = [0, 300]
# This process enqueues the jobs (NetBox's own Job records need NetBox).
pytestmark = pytest.mark.usefixtures("netbox_process")


def both(max_age: int) -> tuple[Setting, Setting]:
    stock, adapter = (Setting(adapter=a, conn_max_age=max_age) for a in (False, True))
    return stock, adapter


def persistent(max_age: int, per_thread: int) -> int:
    """Branch backends the adapter may keep open: ``CAP`` per thread when they persist."""
    return per_thread * scenarios.CAP if max_age else 0


@pytest.mark.parametrize("max_age", CONN_MAX_AGES)
def test_http(netbox: NetBox, max_age: int) -> None:
    allowance = persistent(max_age, scenarios.THREADS)
    stock, adapter = (scenarios.http(netbox, s, allowance) for s in both(max_age))
    scenarios.record("HTTP, gunicorn gthread", max_age, stock, adapter)
    assert stock.peak > 0
    assert adapter.peak > 0
    assert (adapter.failed, adapter.eof) == (0, 0)
    assert adapter.left <= allowance


@pytest.mark.parametrize("max_age", CONN_MAX_AGES)
def test_forking_worker(netbox: NetBox, max_age: int) -> None:
    stock, adapter = (scenarios.forking_worker(netbox, s) for s in both(max_age))
    scenarios.record("rqworker, forking", max_age, stock, adapter)
    assert stock.peak > 0
    assert adapter.peak > 0
    assert (adapter.failed, adapter.left, adapter.eof) == (0, 0, 0)


@pytest.mark.parametrize("max_age", CONN_MAX_AGES)
def test_in_process_worker_and_job_timeout(netbox: NetBox, max_age: int) -> None:
    allowance = persistent(max_age, 1)
    (stock, stock_timeout), (adapter, adapter_timeout) = (
        scenarios.in_process_worker(netbox, s, allowance) for s in both(max_age)
    )
    scenarios.record("rqworker, in-process", max_age, stock, adapter)
    scenarios.record("job_timeout mid-query, in-process", max_age, stock_timeout, adapter_timeout)
    assert stock.peak > 0
    assert adapter.peak > 0
    assert (adapter.failed, adapter.eof) == (0, 0)
    assert adapter.left <= allowance
    assert adapter_timeout.notes == ["0 query left running"]  # and no error noted
    assert (adapter_timeout.failed, adapter_timeout.eof) == (0, 0)
    assert adapter_timeout.left <= allowance


@pytest.mark.parametrize("max_age", CONN_MAX_AGES)
def test_call_command(netbox: NetBox, max_age: int) -> None:
    stock, adapter = (scenarios.commands(netbox, s) for s in both(max_age))
    for name in adapter:
        scenarios.record(name, max_age, stock[name], adapter[name])
    plain, closing = adapter[scenarios.PLAIN], adapter[scenarios.CLOSING]
    assert stock[scenarios.PLAIN].peak > 0
    # No boundary closes a plain command's connections; the cap bounds them.
    assert (plain.failed, plain.peak) == (0, scenarios.CAP)
    assert (closing.failed, closing.peak) == (0, 0)
