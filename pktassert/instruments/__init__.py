"""pktassert's own programs: the record contract, fate tracker, receiver, traffic engine, tag mover."""
