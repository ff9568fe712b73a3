"""Identity: local accounts, passwords, and (later) SSO, sessions and API keys."""
