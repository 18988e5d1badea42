"""The device under test: stages on a topology, inject(), listeners."""
