"""The use cases: the one read–decide–write path and the flows built on it.

``transition`` is the path every change takes (read → ``statemachine`` decides → one SQL
transaction that compare-and-sets the row's version with its audit row and events → after-commit
effects). On it: ``notifications`` (one kept notification) and ``applier`` (a shard's waiting
notifications, batched), ``payments`` and ``refunding`` (claim, send, record the answer),
``polls`` (orderQuery / refundQuery), ``tokens`` (saved cards) and ``events`` (the outbox's
delivery to the merchant).
"""
