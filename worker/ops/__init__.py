"""Operations: the read-only ops page, and the operator's actions (anomalies, replay, reconcile)."""
