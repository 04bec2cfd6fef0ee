"""The merchant HTTP API (``checus-worker api``): payments, refunds, saved cards and the event feed over HTTP.

A thin edge over ``worker.service.PaymentService``: the same store, state machines and jobs, so
what the API reports is exactly what the workers act on. API keys (``keys``), Idempotency-Key
claims (``idempotency``) and RFC 9457 problems (``problems``) are the parts of its own.
"""
