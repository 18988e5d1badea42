"""Other kernels: the same tests run under kernels the user ships (Debian's, or a vmlinuz of theirs),
each booted in a VM with no network (virtme-ng + qemu), results reported beside this machine's.

kernel_images: which kernel a name means, fetched and cached -> vm_boot: the VM and its one command
-> guest_side: the pytest run inside, writing its reports -> matrix: the pytest run outside, feeding
those reports into its own (terminal, JUnit) and the table of results per kernel."""
