"""``batchd serve``: a dashboard of the event log (run, timeline, todos, events), live, and /metrics."""
