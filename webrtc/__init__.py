"""omlmedia webrtc package."""
