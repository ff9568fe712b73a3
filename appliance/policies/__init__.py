"""PII policies: schema, loading from YAML, lookup."""
