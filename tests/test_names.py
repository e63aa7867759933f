"""``branching_ops.names``: valid branch names, their aliases, their ``application_name``."""

from __future__ import annotations

import pytest

from branching_ops.names import branch_alias
from branching_ops.names import branch_application_name
from branching_ops.names import branch_from_application_name
from branching_ops.names import branch_name_error
from tests.hostile import HOSTILE_NAMES


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_saying_why(name: str) -> None:
    error = branch_name_error(name)

    assert error == (
        f"{name!r} is not a valid branch name: it must be 1 to 63 characters of lowercase "
        "ASCII letters, digits and underscores, not starting with a digit."
    )
    with pytest.raises(ValueError, match="is not a valid branch name") as excinfo:
        branch_alias(name)
    assert str(excinfo.value) == error


@pytest.mark.parametrize("name", ["a", "_", "feature_x", "x1", "a" * 63])
def test_valid_names_and_their_alias(name: str) -> None:
    assert branch_name_error(name) is None
    assert branch_alias(name) == "schema_" + name


@pytest.mark.parametrize(
    ("project", "application_name"),
    [(None, "branch:feature_x"), ("", "branch:feature_x"), ("shop", "shop/branch:feature_x")],
)
def test_application_name_names_the_branch(project: str | None, application_name: str) -> None:
    assert branch_application_name("feature_x", project) == application_name
    assert branch_from_application_name(application_name) == "feature_x"


@pytest.mark.parametrize(
    ("application_name", "branch"),
    [
        ("branch:feature_x", "feature_x"),
        ("myproject/branch:feature_x", "feature_x"),
        # PgBouncer's application_name_add_host, whole and cut at 63 bytes
        ("branch:feature_x - 127.0.0.1:53446", "feature_x"),
        ("myproject/branch:feature_x - 127.0.", "feature_x"),
        ("branch:feature_x -", "feature_x"),
        ("branch:feature_x ", "feature_x"),
        ("branch:feature_x junk", None),
        ("myproject branch:feature_x", None),
        ("branch:Bad", None),
        ("psql", None),
        ("", None),
    ],
)
def test_branch_from_application_name(application_name: str, branch: str | None) -> None:
    assert branch_from_application_name(application_name) == branch
