/* Not vendored: written for pktassert's tests.
 *
 * With -target bpf, __x86_64__ is not defined, so glibc's <gnu/stubs.h> includes <gnu/stubs-32.h>,
 * which Debian ships only in libc6-dev-i386 (the xdp-tutorial asks for that package in its
 * setup_dependencies.org and its configure script). xdp-tutorial's common/parsing_helpers.h reaches
 * it through <linux/icmp.h> -> <linux/if.h> -> <sys/socket.h>. The real file only lists glibc
 * functions that are stubs (__stub_* macros), which a BPF program never calls; this empty one stands
 * in for it when libc6-dev-i386 is not installed (when it is, its file comes first on the path).
 */
