"""The long-running process: the loop, its lock, signals and logs."""
