"""Operations: the read-only ops page (``page``, ``queries``), the operator's actions (anomalies,
replay, reconcile: ``actions``), the status snapshot (``status``), the business gauges read at
scrape time (``gauges``) and an order's history drawn for a terminal (``render``)."""
