"""Development tooling, apart from the money path: the local Checus simulator, the bench, the demo.

``serving`` runs any ASGI app on a thread (the simulator, the demo, the tests). Nothing on the
money path imports this package; only the CLI commands that start these tools do, and the
simulator imports none of the worker's flows, store or receiver (import-linter contracts in
``pyproject.toml``).
"""
