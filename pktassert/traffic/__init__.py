"""Traffic nobody had to write by hand: packets, floods, pcap files, hypothesis strategies and packets at
the edges a filter draws, as one value that compare() and the command line send through each subject alike."""
