"""Dependency cycles among todos: which todos are on one, and one cycle through each, for messages.

Shared by the folder scan (a cycle makes every member invalid) and plan checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["find_cycles", "format_cycle"]


def find_cycles(graph: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """For each node on a dependency cycle, one cycle through it: ``{"273": ("273", "274", "273")}``.

    ``graph`` maps a node to the nodes it depends on; edges to unknown nodes are ignored. Iterative
    Tarjan (no recursion limit on long chains), then a breadth-first path back to each member.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            deps = [d for d in graph[node] if d in graph]
            if i < len(deps):
                work.append((node, i + 1))
                nxt = deps[i]
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
                if len(comp) > 1 or node in graph[node]:
                    components.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles: dict[str, tuple[str, ...]] = {}
    for comp in components:
        members = set(comp)
        # One cycle serves every member on it (rotated); only members off it need their own search,
        # which keeps a long ring linear instead of quadratic.
        ring = _path_back(graph, min(comp), members)[:-1]
        for i, node in enumerate(ring):
            cycles[node] = (*ring[i:], *ring[:i], node)
        for start in comp:
            if start not in cycles:
                cycles[start] = _path_back(graph, start, members)
    return cycles


def _path_back(graph: Mapping[str, Sequence[str]], start: str, members: set[str]) -> tuple[str, ...]:
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


def format_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)
