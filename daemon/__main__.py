"""``python -m daemon`` runs the batchd CLI (used where the console script is not on PATH)."""

from daemon.cli.main import main

raise SystemExit(main())
