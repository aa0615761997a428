"""agents.pipeline's pure parts: how work is cut into units, and the prompts."""

from __future__ import annotations

from agents.pipeline import plan_units
from agents.source import Item


def items(*sizes: int) -> tuple[list[Item], dict[str, str]]:
    made = [Item(key=f"/r/f{n}.md", fingerprint=f"h{n}") for n in range(len(sizes))]
    return made, {i.key: "x" * size for i, size in zip(made, sizes, strict=True)}


def keys(units: list[list[Item]]) -> list[list[str]]:
    return [[i.key.removeprefix("/r/") for i in unit] for unit in units]


def test_small_items_of_one_group_are_packed_within_the_limits() -> None:
    made, texts = items(100, 200, 300, 400, 500)
    units = plan_units(made, texts, {}, batch_chars=600, batch_items=8)
    assert keys(units) == [["f0.md", "f1.md", "f2.md"], ["f3.md"], ["f4.md"]]
    assert keys(plan_units(made, texts, {}, 10_000, 2)) == [
        ["f0.md", "f1.md"],
        ["f2.md", "f3.md"],
        ["f4.md"],
    ]


def test_groups_never_share_a_unit_and_a_large_item_is_alone() -> None:
    made, texts = items(10, 10, 5000, 10)
    groups = {made[0].key: "p1", made[1].key: "p2", made[2].key: "p1", made[3].key: "p1"}
    units = plan_units(made, texts, groups, batch_chars=1000, batch_items=8)
    assert keys(units) == [["f0.md"], ["f2.md"], ["f3.md"], ["f1.md"]]


def test_the_plan_is_the_same_for_the_same_items_in_any_order() -> None:
    made, texts = items(100, 200, 300, 400)
    assert plan_units(made, texts, {}, 500, 8) == plan_units(made[::-1], texts, {}, 500, 8)
