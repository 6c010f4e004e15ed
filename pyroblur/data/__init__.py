"""Getting data: HTTP downloads, safe archive extraction, annotation formats and sources."""
