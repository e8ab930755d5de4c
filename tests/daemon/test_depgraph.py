"""Dependency cycle detection and how cycles are shown."""

from __future__ import annotations

import time

from daemon.intake.depgraph import find_cycles, format_cycle


def test_no_cycles_in_a_chain() -> None:
    """A chain and a diamond have no cycles; edges to unknown nodes are ignored."""
    assert find_cycles({"1": [], "2": ["1"], "3": ["1", "2"], "4": ["2", "3", "99"]}) == {}


def test_two_cycle_and_bystander() -> None:
    """Both members of a two-cycle are reported; a todo that only depends on them is not."""
    cycles = find_cycles({"273": ["274"], "274": ["273"], "275": ["273"]})
    assert set(cycles) == {"273", "274"}
    assert format_cycle(cycles["274"], start="274") == "274 -> 273 -> 274"


def test_self_loop() -> None:
    """A node that depends on itself is a cycle of one."""
    assert format_cycle(find_cycles({"7": ["7"]})["7"], start="7") == "7 -> 7"


def test_member_off_the_shortest_ring_gets_its_own_cycle() -> None:
    """In a component with two cycles, every member gets a cycle through itself."""
    graph = {"1": ["2"], "2": ["1", "3"], "3": ["2"]}
    cycles = find_cycles(graph)
    for node, cycle in cycles.items():
        assert node in cycle
        assert cycle[0] == cycle[-1]


def test_long_ring_is_linear_and_shortened() -> None:
    """A 20,000-node ring needs no recursion, is found quickly, and is shown shortened."""
    n = 20_000
    graph = {str(i): [str(i % n + 1)] for i in range(1, n + 1)}
    started = time.perf_counter()
    cycles = find_cycles(graph)
    assert time.perf_counter() - started < 2.0
    assert len(cycles) == n
    shown = format_cycle(cycles["10"], start="10", label=lambda k: k.zfill(3))
    assert shown == "010 -> 011 -> 012 -> 013 -> 014 -> 015 -> 016 -> 017 -> … -> 009 -> 010 (20000 todos)"
