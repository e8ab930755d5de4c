"""The demo: a scripted stand-in for an LLM coding agent (:mod:`daemon.demo.agent`)."""
