"""Temporal plumbing: connecting, serving, encoding, counting, injecting faults."""
