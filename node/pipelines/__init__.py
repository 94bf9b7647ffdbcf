"""Pipelines a job can run, one module each (calcium today; organs next), and the outbox."""
