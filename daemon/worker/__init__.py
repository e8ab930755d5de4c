"""``batchd worker``: a process on any host that runs agents for a coordinator (``batchd run``).

It follows the shared log (PostgreSQL) for ``agent.queued`` claims, wins one with an append at an
expected version, runs the agent in a workspace of its own clone, renews its lease while the agent
runs, and hands the collected change back through the git remote (``refs/batchd/todo/...``) with an
``agent.reported`` appended under the lease. See :mod:`statemachine.dispatch` for the protocol.
"""
