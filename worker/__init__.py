"""checus-payment-worker: the merchant side of the Checus payment gateway."""
