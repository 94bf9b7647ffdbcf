"""The algorithm identity the result objects name (node/results/equipment.py)."""

from __future__ import annotations

from node.results.equipment import algorithm_identity, software_version
from tests.unit.node.results.test_regions import result_with


def test_algorithm_identity() -> None:
    assert algorithm_identity(result_with({})) == ("ctnode calcium", software_version())
    named = result_with({})
    named.model = "ctnode-calcium 2026.1"
    assert algorithm_identity(named) == ("ctnode-calcium", "2026.1")
