"""What clang, LLVM and the verifier said, cut down to their own words about the user's source,
with the user's line numbers and, for the common causes, a hint."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from pktassert.build import compile_check

STACK_LIMIT = 512  # bytes of stack a BPF program has (the inspector and the inlined filter share it)
LOG_LEVEL, LOG_SIZE = compile_check.VERIFIER_LOG_LEVEL, compile_check.VERIFIER_LOG_SIZE
verifier_log = compile_check.verifier_log  # in the compiler's child process too, which imports only bcc

# LLVM's BPF backend: its message, and what it means for a filter.
BACKEND_HINTS = [
    (r"A call to built-in function '(\w+)' is not supported",
     ("BPF has no {0}(): __builtin_{0} needs a length known when the program is compiled (a constant), "
      "which LLVM turns into plain loads and stores. Fix: use a constant length, or copy in a loop with a "
      "constant bound (bpf_xdp_load_bytes() copies from the packet).")),
    (r"Unsupported dynamic stack allocation",
     "an array whose size is known only at run time: BPF's stack is fixed. Fix: give the array a constant size."),
    (r"too many args",
     "a BPF function takes at most 5 arguments. Fix: pass a pointer to a struct, or make it static __always_inline."),
    (r"A call to global function '(\w+)' is not supported",
     "{0}() is not defined in the source (or not inlined). Fix: define it, static __always_inline."),
]
# The verifier: its reason, a hint, and whether its count of checked instructions helps.
VERIFIER_HINTS = [
    (r"BPF program is too large\. Processed \d+ insn",
     ("the verifier checks every path through the program, each loop iteration again, and gives up after "
      "1,000,000 instructions (the program itself may be short). Fix: bound loops by small constants, or run "
      "the loop's body through bpf_loop()."), True),
    (r"The sequence of \d+ jumps is too complex",
     ("more than 8192 branches were waiting to be checked at once (each branch inside a loop adds paths). "
      "Fix: fewer branches inside loops, or smaller loop bounds."), True),
    (r"infinite loop detected",
     ("the verifier found a loop that comes back to the same state, so it may never end. Fix: give the loop "
      "a bound the verifier can see (a constant limit on a counter)."), True),
    (r"back-edge from insn|unbounded loop|loop is not bounded",
     "a loop the verifier cannot bound. Fix: a constant limit on the loop counter.", True),
    (r"combined stack size of \d+ calls",
     (f"functions calling each other use more than {STACK_LIMIT} bytes of stack together. Fix: inline them "
      f"(static __always_inline) or move large locals into a BPF_PERCPU_ARRAY map."), False),
    (r"invalid access to packet",
     ("a packet access the verifier cannot prove lies between ctx->data and ctx->data_end. Fix: compare the "
      "pointer plus the access's length with data_end first (if (p + n > end) return XDP_PASS;)."), False),
    (r"invalid mem access '(?:map_value_or_null|ptr_or_null_|\w+_or_null)",
     "a map lookup's result used without checking it for NULL. Fix: if (!value) return ...; before using it.",
     False),
]

_INSN = re.compile(r"^\d+: \(")
_LINFO = re.compile(r"^; (.*?)(?: @ (.+):(\d+))?$")
_STATS = ("processed ", "verification time", "stack depth", "max_states_per_insn")
_NOISE = re.compile(r"^(?:;|\d+: |from \d+ to \d+:|(?:cur|old) state:|func#\d+|Validating |last_idx|regs=|parent |"
                    r"mark_precise|bpf: |Func#|propagating |Live regs)")


def split_log(log: str) -> tuple[list[str], list[str]]:
    """The lines before and after bcc's rewritten source (in the log when it compiled with
    DEBUG_PREPROCESSOR), without it and bcc's chatter. Messages after it count rewritten lines."""
    lines = [ln for ln in log.splitlines() if not ln.startswith(("Running from kernel directory", "clang -cc1 "))]
    try:
        start = lines.index("#if defined(BPF_LICENSE)")
        end = len(lines) - 1 - lines[::-1].index("#include <bcc/footer.h>")
    except ValueError:
        return lines, []
    return lines[:start], lines[end + 1:]


def user_line(maps: dict[str, list[int]], file: str, line: int) -> tuple[str, int] | None:
    """The file (as composed) and the line the user wrote, for a line number that counts bcc's
    rewritten lines; None when it is not certain (then no line is better than a wrong one)."""
    names = [n for n in maps if n == file or os.path.basename(n) == file]  # the verifier gives the base name
    if len(names) != 1:
        return None
    where = maps[names[0]]
    return (names[0], where[line - 1]) if 0 < line <= len(where) and where[line - 1] else None


def compile_failure(name: str, func: str, log: str, maps: dict[str, list[int]],
                    stack: Callable[[], tuple[int | None, bool, int | None, str]], ctx: str = "struct xdp_md *") -> str:
    """The message for a source that does not compile; ``stack()`` (only called for a stack overflow)
    measures: the inspector's stack depth, whether the filter compiles alone, its depth, and the log."""
    before, after = split_log(log)
    if any(f"function '{func}' has internal linkage but is not defined" in ln for ln in before):
        return (f"{name} defines no function {func}() once its macros are expanded (clang: function '{func}' "
                f"has internal linkage but is not defined). Fix: pass func= the name the entry function has "
                f"after macro expansion, or define `int {func}({ctx}ctx)`.")
    if any("BPF stack limit of" in ln for ln in after or before):
        return stack_message(name, func, *stack())
    return f"{name} does not compile:\n{compiler_lines(log, func, maps, ctx)}"


def compiler_lines(log: str, func: str, maps: dict[str, list[int]], ctx: str = "struct xdp_md *") -> str:
    """clang's and LLVM's errors, each with the source line and caret clang prints after it, in the
    user's line numbers; warnings dropped; a hint for the causes we know."""
    before, after = split_log(log)
    lines = before + [_relocate(ln, maps) for ln in after]
    out: list[str] = []
    for i, ln in enumerate(lines):
        if "error:" not in ln or len(out) >= 12:
            continue
        out.append(re.sub(r"in function (pktassert_\w+) i32 \(%struct\.xdp_md\*\)",
                          rf"in \1, pktassert's entry with {func}() inlined", ln))
        for follow in lines[i + 1:i + 3]:
            if not follow.strip() or re.search(r"(error|warning|note):", follow):
                break
            out.append(follow)
    text = "\n".join(out)
    if f"conflicting types for '{func}'" in text:
        out.append(f"hint: the entry function must be `int {func}({ctx}ctx)`")
    for pattern, hint in BACKEND_HINTS:
        m = re.search(pattern, text)
        if m:
            out.append("hint: " + hint.format(*m.groups()))
    return "\n".join(out) or "\n".join(lines).strip()[-2000:]


def _relocate(line: str, maps: dict[str, list[int]]) -> str:
    """``file:L:C`` in rewritten lines -> the user's line, or just ``file`` when it cannot be known."""
    for file in maps:
        def fix(m: re.Match[str], file: str = file) -> str:
            found = user_line(maps, file, int(m.group(1)))
            return f"{file}:{found[1]}:{m.group(2)}" if found else file
        line = re.sub(re.escape(file) + r":(\d+):(\d+)", fix, line)
    return line


def stack_message(name: str, func: str, inspector: int | None, alone_ok: bool, alone: int | None,
                  alone_log: str) -> str:
    """A stack overflow, saying whose share is too big: the inspector's or the filter's own."""
    left = STACK_LIMIT - inspector if inspector else None
    share = (f"The inspector takes {inspector} bytes, which leaves {left} for the filter" if inspector
             else "The inspector takes some of it")
    if alone_ok:
        uses = f"{func}() alone uses {alone} bytes" if alone else f"{func}() compiles alone"
        why = f"{share}; {uses}: it would fit on its own, so the inspector's share is what does not fit."
        over = alone - left if alone and left else 0
    elif "BPF stack limit of" in alone_log:
        why = (f"{func}() does not fit even on its own (compiled without the inspector, LLVM says the same). "
               f"{share}.")
        over = 0
    else:
        why, over = f"{share}.", 0
    return (f"{name} does not compile: {func}() and pktassert's inspector share BPF's {STACK_LIMIT}-byte stack, "
            f"and together they need more (LLVM: \"Looks like the BPF stack limit of {STACK_LIMIT} bytes is "
            f"exceeded\").\n{why}\nFix: move large local variables (arrays, big structs) into a one-slot per-CPU "
            f"array map: BPF_PERCPU_ARRAY(scratch, struct big, 1); then `__u32 zero = 0; struct big *b = "
            f"scratch.lookup(&zero); if (!b) return XDP_ABORTED;`" + (f", or make them {over} bytes smaller." if
                                                                     over > 0 else "."))


def verifier_message(log: str, err: int, name: str, maps: dict[str, list[int]], sources: dict[str, str]) -> str:
    """The verifier's reason, the user's line it was checking, a hint, and its last instructions.
    ``sources``: the text of each file as composed (for the line as the user wrote it)."""
    lines = [ln for ln in log.splitlines() if ln.strip()]
    stats = [ln for ln in lines if ln.startswith(_STATS)]
    body = [ln for ln in lines if not ln.startswith(_STATS)]
    last = max((i for i, ln in enumerate(body) if _INSN.match(ln)), default=-1)
    reason = ([ln for ln in body[last + 1:] if not _NOISE.match(ln)][:4]
              or [f"{os.strerror(err) if err else 'no reason given'} (the verifier's log is empty)"])
    out = list(reason)
    at = next((m for m in map(_LINFO.match, reversed(body[:last + 1])) if m and m.group(2)), None)
    found = at and user_line(maps, at.group(2), int(at.group(3)))
    if found:
        file, n = found
        text = sources.get(file, "").splitlines()
        shown = text[n - 1].strip() if n <= len(text) else ""
        out.append(f"at {file}:{n}: {shown}" if file == name else f"at pktassert's {os.path.basename(file)}:{n}: {shown}")
    for pattern, hint, counts in VERIFIER_HINTS:
        if re.search(pattern, "\n".join(reason)):
            out.append("hint: " + hint)
            out += [f"verifier: {ln.split(' max_states')[0]}" for ln in stats if counts and ln.startswith("processed ")]
            break
    recent = [ln.split(" ; ")[0].rstrip() for ln in body[:last + 1] if _INSN.match(ln)][-4:]
    if recent:
        out += ["last instructions:", *("  " + ln for ln in recent)]
    return "\n".join(out)


def verifier_lines(log: str) -> str:
    """The reason and the last instructions from a log bcc printed (no line: no map for it here)."""
    return verifier_message(log, 0, "", {}, {}) if log.strip() else ""


def libbpf_verifier_message(log: str, err: str) -> str:
    """The verifier's reason and the source line it was checking, from what libbpf printed while
    loading. The line comes from the object's own line info (``; text @ file:line`` in the log)."""
    body = log.split("-- BEGIN PROG LOAD LOG --")[-1].split("-- END PROG LOAD LOG --")[0]
    if "-- BEGIN PROG LOAD LOG --" not in log:  # libbpf refused it before the kernel saw it
        said = [ln.strip() for ln in log.splitlines() if ln.strip()][-4:]
        return "\n".join(said) or err
    at = next((m for m in map(_LINFO.match, reversed(body.splitlines())) if m and m.group(2)), None)
    if at is None:
        return verifier_message(body, 0, "", {}, {})
    file, line = at.group(2), int(at.group(3))
    return verifier_message(body, 0, file, {file: list(range(1, line + 1))}, {file: "\n" * (line - 1) + at.group(1)})


# -- A BPF source that reaches glibc's headers (clang -target bpf) -----------------------------------

GLIBC_STUBS = "'gnu/stubs-32.h' file not found"
_CHAIN = re.compile(r"^In file included from (.+):(\d+):$")
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
_SYSTEM = ("/usr/include/", "/usr/local/include/", "/usr/lib/llvm", "/usr/lib/clang/", "/usr/lib/gcc/")
_KERNEL = ("linux/", "asm/", "asm-generic/", "bpf/")
# glibc's header -> the kernel's or libbpf's that has what BPF code wants of it, and what that is.
_LIBC_FOR_BPF = {
    **dict.fromkeys(("stdint.h", "inttypes.h", "sys/types.h"), ("<linux/types.h>", "__u8, __u16, __u32, __u64, __s32...")),
    "netinet/in.h": ("<linux/in.h>", "IPPROTO_UDP and the other IPPROTO_*, struct in_addr"),
    "netinet/ip.h": ("<linux/ip.h>", "struct iphdr"),
    "netinet/ip6.h": ("<linux/ipv6.h>", "struct ipv6hdr"),
    "netinet/tcp.h": ("<linux/tcp.h>", "struct tcphdr"),
    "netinet/udp.h": ("<linux/udp.h>", "struct udphdr"),
    "netinet/icmp6.h": ("<linux/icmpv6.h>", "struct icmp6hdr"),
    **dict.fromkeys(("net/ethernet.h", "netinet/if_ether.h"), ("<linux/if_ether.h>", "struct ethhdr, ETH_P_IP...")),
    **dict.fromkeys(("arpa/inet.h", "endian.h"), ("<bpf/bpf_endian.h>", "bpf_htons(), bpf_ntohl()...")),
}
SHIM_FIX = ("give clang an empty gnu/stubs-32.h: `mkdir -p include-shim/gnu && touch include-shim/gnu/stubs-32.h` "
            "and cflags=(\"-I/path/to/include-shim\",), or install libc6-dev-i386 (what xdp-tutorial's setup asks for)")


def include_chain(lines: list[str], at: int) -> list[str]:
    """clang's "In file included from file:line:" lines just before its message on line ``at``."""
    start = at
    while start > 0 and _CHAIN.match(lines[start - 1]):
        start -= 1
    return lines[start:at]


def _line_of(file: str, n: int) -> str:
    try:
        with open(file, errors="replace") as f:
            return next((ln.rstrip("\n") for i, ln in enumerate(f, 1) if i == n), "")
    except OSError:
        return ""


def _is_system(file: str) -> bool:
    return os.path.abspath(file).startswith(_SYSTEM) or "/lib/clang/" in file


def glibc_reached(source: str, stderr: str) -> str | None:
    """For a compile that failed on glibc's <gnu/stubs-32.h>: which of the user's #include lines led there
    (clang's include chain), why it fails, and the fix; None for any other failure."""
    lines = stderr.splitlines()
    at = next((i for i, ln in enumerate(lines) if GLIBC_STUBS in ln), None)
    if at is None:
        return None
    chain = include_chain(lines, at)
    # (file, line, the header that line includes), outermost first
    steps = []
    for ln in chain:
        m = _CHAIN.match(ln)
        assert m is not None  # include_chain took only these
        included = _INCLUDE.match(_line_of(m.group(1), int(m.group(2))))
        steps.append((m.group(1), int(m.group(2)), included.group(1) if included else ""))
    users = [s for s in steps if not _is_system(s[0])]
    out = [f"{source} (a libbpf source) does not compile with clang: it includes glibc's headers, which do not "
           f"build for BPF (`clang -target bpf`).", "your #include that leads there:"]
    out += [f"  {f}:{n}: {_line_of(f, n).strip()}" for f, n, _ in users] or ["  (not known: clang printed no chain)"]
    out += ["clang's include chain:", *chain, *lines[at:at + 3],
            "Why: clang defines no __x86_64__ for -target bpf, so glibc's <gnu/stubs.h> asks for the 32-bit "
            "<gnu/stubs-32.h>, which Debian ships only in libc6-dev-i386; and glibc's types would be a 32-bit "
            "machine's (uintptr_t of 4 bytes)."]
    entered = users[-1][2] if users else ""
    if entered.startswith(_KERNEL):
        below = steps[steps.index(users[-1]) + 1:]
        step = next(((f, inc) for f, _, inc in below
                     if _header_name(f).startswith(_KERNEL) and inc and not inc.startswith(_KERNEL)), None)
        how = f": <{_header_name(step[0])}> includes <{step[1]}> outside the kernel" if step else ""
        out.append(f"<{entered}> is a kernel header, but it reaches glibc{how}.")
        out.append(f"Fix: to keep <{entered}>, {SHIM_FIX}.")
        return "\n".join(out)
    vmlinux = next(((f, n) for f, n in _vmlinux_includes([source, *(f for f, _, _ in users)])), None)
    better = _LIBC_FOR_BPF.get(entered)
    if vmlinux:
        where = f"line {vmlinux[1]}" if vmlinux[0] == source else f"{vmlinux[0]}:{vmlinux[1]}"
        gives = f" ({better[1]} among them)" if better and not better[0].startswith("<bpf/") else ""
        out.append(f"Fix: drop #include <{entered}>: \"vmlinux.h\" ({where}) has the kernel's types and structs "
                   f"already{gives}, <bpf/bpf_endian.h> has bpf_htons() and bpf_ntohs().")
    elif better:
        out.append(f"Fix: include {better[0]} instead of <{entered}> ({better[1]}): BPF programs use the kernel's "
                   f"headers (<linux/...> or \"vmlinux.h\") and libbpf's (<bpf/bpf_helpers.h>), not libc's.")
    else:
        out.append(f"Fix: instead of <{entered or 'the glibc header'}>, use the kernel's headers (<linux/...> or "
                   f"\"vmlinux.h\") and libbpf's (<bpf/bpf_helpers.h>, <bpf/bpf_endian.h>); for a header you "
                   f"cannot change, {SHIM_FIX}.")
    return "\n".join(out)


def _vmlinux_includes(files: list[str]) -> list[tuple[str, int]]:
    """Where these files #include "vmlinux.h"."""
    found = []
    for f in dict.fromkeys(files):
        try:
            text = open(f, errors="replace").read().splitlines()
        except OSError:
            continue
        found += [(f, i) for i, ln in enumerate(text, 1) if (m := _INCLUDE.match(ln)) and m.group(1) == "vmlinux.h"]
    return found


def _header_name(path: str) -> str:
    """How an #include names a system header: its path below the include folder (Debian's multiarch one too)."""
    return re.sub(r"^/usr/(?:local/)?include/(?:\w+-linux-gnu\w*/)?", "", path).split("/include/")[-1]
