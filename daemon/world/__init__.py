"""What batchd does to the world: git, agent processes and their workspaces, the sandbox, checks,
the remote, systemd's notify socket, fault injection for the crash suite."""
