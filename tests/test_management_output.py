"""``branching_ops.management.output``: the operations commands' tables and JSON, exactly."""

from __future__ import annotations

import json
from datetime import timedelta

from branching_ops.activity import Backend
from branching_ops.management.output import backend_json
from branching_ops.management.output import backend_table
from branching_ops.management.output import format_duration
from branching_ops.management.output import format_table
from branching_ops.management.output import seconds
from branching_ops.management.output import to_json

SEEN = Backend(
    pid=4242,
    branch="feature_x",
    application_name="shop/branch:feature_x",
    user="app",
    state="idle",
    client="127.0.0.1",
    age=timedelta(hours=1, minutes=2, seconds=3.7),
    idle=timedelta(seconds=5),
    can_signal=True,
)
HIDDEN = Backend(  # another role's backend, without pg_read_all_stats
    pid=7,
    branch="b",
    application_name="branch:b",
    user="other",
    state=None,
    client=None,
    age=None,
    idle=None,
    can_signal=False,
)


def test_durations_in_hours_minutes_seconds() -> None:
    assert format_duration(timedelta(hours=26, seconds=61.9)) == "26:01:01"
    assert format_duration(timedelta(0)) == "0:00:00"
    assert format_duration(None) == "-"
    assert seconds(timedelta(seconds=1.23456)) == 1.235
    assert seconds(None) is None


def test_table_numbers_right_text_left_no_trailing_spaces() -> None:
    table = format_table(("NAME", "COUNT", "NOTE"), [("a", 5, ""), ("longer", 120, "x")])

    assert table.splitlines() == [
        "NAME    COUNT  NOTE",
        "a           5",
        "longer    120  x",
    ]


def test_table_of_no_rows_is_its_header() -> None:
    assert format_table(("BRANCH", "PID"), []) == "BRANCH  PID"


def test_backend_table_shows_a_dash_for_what_the_role_may_not_see() -> None:
    assert backend_table([SEEN, HIDDEN]).splitlines() == [
        "BRANCH      PID  USER   STATE  AGE      IDLE     CLIENT",
        "feature_x  4242  app    idle   1:02:03  0:00:05  127.0.0.1",
        "b             7  other  -      -        -        -",
    ]


def test_backend_json_has_null_for_what_the_role_may_not_see() -> None:
    assert backend_json(SEEN) == {
        "pid": 4242,
        "branch": "feature_x",
        "application_name": "shop/branch:feature_x",
        "user": "app",
        "state": "idle",
        "client": "127.0.0.1",
        "age_seconds": 3723.7,
        "idle_seconds": 5.0,
    }
    assert json.loads(to_json({"backends": [backend_json(HIDDEN)]})) == {
        "backends": [
            {
                "pid": 7,
                "branch": "b",
                "application_name": "branch:b",
                "user": "other",
                "state": None,
                "client": None,
                "age_seconds": None,
                "idle_seconds": None,
            }
        ]
    }
    assert to_json({"a": 1}) == '{\n  "a": 1\n}'
