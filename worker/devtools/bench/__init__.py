"""``checus-worker bench``: the real stack on loopback, driven hard, measured against floors.

Why a package of its own: the figures only mean something next to the floors measured in the
same run on the same machine (a hello-world endpoint on the same server, rq no-op jobs with
the same worker class and count, RSA verifies per second), so the command starts everything
itself, as real processes, and compares ratios rather than absolute numbers.

Modules, in the order a run uses them: ``options`` (what to run), ``stack`` and ``procs``
(processes, cleanup, RSS/CPU sampling), ``seed`` (bulk PENDING orders), ``payloads`` (signed
notification bodies and the request plan), ``loadgen`` (wrk and its Lua script), ``applied``
(committed transitions read from the store), ``hello`` and ``floors`` (the floors), ``phases``,
``duplicates``, ``scaling`` (scale-out and the memory soak), ``schedtick`` (the scheduler's tick
with many pending orders), ``report`` and ``render`` (JSON and tables), ``runner`` (one run).
"""
