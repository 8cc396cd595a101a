"""Demo tools with built-in data, for the examples and the offline model (no API needed)."""
