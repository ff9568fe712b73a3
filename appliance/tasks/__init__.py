"""Task templates (summarize, extract, classify, redact, ask, chat) and how they run."""
