"""The audit trail: one row per audited action, counts and decisions only."""
