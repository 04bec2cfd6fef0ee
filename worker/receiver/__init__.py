"""The receiver: Checus's notifications in over HTTP — verify, keep, hand off — and nothing more.

``app`` (routes, health) → ``ingest`` (bounded read, verify the sign on the raw bytes, parse,
Redis fast path) → ``inbox_writer`` (one thread group-commits the inbox rows) → the shard's apply
job is woken → ack. ``slow_clients`` bounds slow and large clients; ``web`` builds the app from a
runtime; ``processes`` serves it, in this process or in several on one port.
"""
