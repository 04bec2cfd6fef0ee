"""A local Checus (PayerMax "aggregate-pay") gateway, for tests and development.

It implements the other side of the wire independently of ``worker.gateway``'s client (only
the signing, wire and money primitives are shared), so tests of the client against it mean
something. Behaviour follows WIRE.md §26; where the docs are silent, ``SimulatorConfig``
holds the choice.

Layout: ``config`` (settings), ``server``/``app`` (serving), ``gateway`` (HTTP face),
``envelope``/``fields`` (request checks), ``payments``/``outcomes``/``refunds``/``tokens``
(endpoint behaviour), ``views`` (wire renderings), ``notifier`` (delivery and retries),
``clock`` (virtual time and the scheduler), ``faults`` (fault injection), ``cashier`` (HTML
pages), ``control`` (the ``/__sim`` API), ``state``/``records`` (the truth), ``runtime``
(wiring: ``SimulatorRuntime``). The signed caller and notification sink that tests drive it with
live in ``tests/support/simkit.py``.
"""
