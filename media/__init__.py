"""The RTP media engine: port allocation, RTP endpoints and what plays, records or relays media."""
