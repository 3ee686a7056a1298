"""Pure decision logic on plain values: the request view, the principal, GCRA, redaction."""
