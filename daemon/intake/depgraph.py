"""Dependency cycles among todos: which todos are on one, and one cycle through each, for messages.

Shared by the folder scan (a cycle makes every member invalid) and plan checks. Linear in the size
of the graph for the common shapes (a ring of 3,000 todos included): no recursion, and one cycle
tuple shared by all the members on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["find_cycles", "format_cycle"]


def _components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components that contain a cycle (iterative Tarjan)."""
    deps = {node: [d for d in targets if d in graph] for node, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(deps[node]):
                work.append((node, i + 1))
                nxt = deps[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1 or node in deps[node]:
                    components.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def find_cycles(graph: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Each node on a dependency cycle -> one closed cycle through it, e.g. ``("273", "274", "273")``.

    ``graph`` maps a node to the nodes it depends on; edges to unknown nodes are ignored. Members of
    one ring share one tuple, which does not necessarily start at them: show it with
    ``format_cycle(cycle, start=node)``.
    """
    cycles: dict[str, tuple[str, ...]] = {}
    for comp in _components(graph):
        members = set(comp)
        ring = _path_back(graph, min(comp), members)
        for node in ring:
            cycles[node] = ring
        for start in comp:  # members off that ring (several cycles in one component)
            if start not in cycles:
                cycles[start] = _path_back(graph, start, members)
    return cycles


def _path_back(graph: Mapping[str, Sequence[str]], start: str, members: set[str]) -> tuple[str, ...]:
    """The shortest cycle from ``start`` back to itself inside one component (breadth-first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for dep in graph[node]:
                if dep not in members:
                    continue
                if dep == start:
                    path, step = [start], node
                    while step != start:
                        path.append(step)
                        step = previous[step]
                    path.append(start)
                    return (start, *reversed(path[1:-1]), start)
                if dep not in previous:
                    previous[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return (start, start)  # unreachable for a strongly connected component


def format_cycle(
    cycle: Sequence[str],
    *,
    start: str | None = None,
    label: Callable[[str], str] = str,
    limit: int = 10,
) -> str:
    """``"273 -> 274 -> 273"``, starting at ``start``; a cycle longer than ``limit`` is shortened."""
    ring = list(cycle[:-1]) if len(cycle) > 1 and cycle[0] == cycle[-1] else list(cycle)
    at = ring.index(start) if start is not None and start in ring else 0
    n = len(ring)
    if n <= limit:
        shown = [label(ring[(at + i) % n]) for i in range(n)]
        return " -> ".join([*shown, shown[0]])
    head = [label(ring[(at + i) % n]) for i in range(limit - 2)]
    last = label(ring[(at - 1) % n])
    return " -> ".join([*head, "…", last, head[0]]) + f" ({n} todos)"
