"""The ``batchd`` command: argument parsing, one handler per command, errors caught in one place."""
