"""What the kernel tells about each packet: records, fates, rule traces, prints, outputs."""
