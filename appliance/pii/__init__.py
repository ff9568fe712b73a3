"""PII detection (Presidio) and what is done to each finding."""
