"""Per-request cost: on-prem compute time against a frontier API's list price."""
