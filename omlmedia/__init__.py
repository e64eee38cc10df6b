"""omlmedia omlmedia package."""
