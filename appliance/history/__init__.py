"""Request history content: kept (sealed, expiring) only where the request's policy retains it."""
