"""The per-turn work: routing, generation, persistence. Knows nothing of HTTP."""
