"""The kernel's faces: libbpf, test runs, BTF, ELF objects, maps, tracefs, conntrack counters."""
