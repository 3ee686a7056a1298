"""Event schema and buses. In-process bus here; Redis streams in distributed mode."""
