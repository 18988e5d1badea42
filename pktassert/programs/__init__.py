"""What is tested (bcc sources, libbpf sources, ELF objects, nftables rule sets) and how it is loaded."""
