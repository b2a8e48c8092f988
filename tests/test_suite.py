"""How the suite is spread over pytest-xdist's workers (tests/conftest.py, README's Tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def shared_by_the_module() -> list[str]:
    return []


def test_a_test_sharing_a_module_fixture_runs_with_its_group(
    request: pytest.FixtureRequest, shared_by_the_module: list[str]
) -> None:
    """Grouped tests reach one worker: pytest-xdist tags their node ids with the group.

    Under pytest 9.2 with pytest-xdist 3.8 the tag is silently lost, the groups are ignored,
    and two workers built the same Dagster venv at once (a CI failure): this catches it.
    """
    marks = [mark.args[0] for mark in request.node.iter_markers("xdist_group")]
    assert marks == ["tests/test_suite.py"], "conftest did not group a test sharing a fixture"
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@tests/test_suite.py"), (
            "pytest-xdist ignored the xdist_group marks: install the pins of pyproject.toml"
        )
