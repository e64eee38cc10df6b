"""omlmedia sip package."""
