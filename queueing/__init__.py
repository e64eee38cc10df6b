"""omlmedia queueing package."""
