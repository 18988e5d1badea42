"""Frames as bytes: what a test passes, floods, checksums, pcap files, the wire format. No root."""
