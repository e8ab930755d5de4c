"""The engine: what to do next, decided from the projected state alone, and the one place each
decision is carried out.

- :mod:`daemon.engine.state`: pure queries over the projection (a phase's members and head, the
  trees known green);
- :mod:`daemon.engine.commands`: the commands a decision returns;
- :mod:`daemon.engine.continuous`: the work-conserving policy, ``decide(state, world) -> commands``;
- :mod:`daemon.engine.execute`: carries each command out (intent event -> effect -> outcome event).
"""
