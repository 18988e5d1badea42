"""Checks of what a Program is given (source, func, cflags), before anything is compiled: each
refusal is one ProgramError that names the cause and the fix."""

from __future__ import annotations

import codecs
import os
import re

from pktassert.errors import ProgramError

# Names a filter may not use: ours all start with these (maps, functions, macros, types).
RESERVED = ("pktassert_", "PKTASSERT_")
SETTABLE = {"PKTASSERT_RING_PAGES"}  # ours, meant to be set with -D (see program.py's prelude)
_RESERVED_NAME = re.compile(r"\b(?:pktassert_|PKTASSERT_)\w*")
# Comments, and string and character literals: blanked (newlines kept) before looking for names.
_NOT_CODE = re.compile(r"//(?:\\.|[^\n\\])*|/\*.*?(?:\*/|\Z)|\"(?:\\.|[^\"\\\n])*\"?|'(?:\\.|[^'\\\n])*'?", re.DOTALL)
_MACRO_FLAG = re.compile(r"-([DU])\s*([A-Za-z_]\w*)?")
_FUNC_DEF = re.compile(r"^[ \t]*(?:static\s+)?(?:__always_inline\s+|inline\s+)*int\s+(\w+)\s*\([^;{}]*\)\s*\{",
                       re.MULTILINE)


def check_func(func: object) -> None:
    if not isinstance(func, str):
        raise ProgramError(f"func={func!r} is {_a(func)}, not a string. Fix: func=\"name\", the name of the "
                           f"filter's entry function `int name(struct xdp_md *ctx)`.")
    if not re.fullmatch(r"[A-Za-z_]\w*", func):
        raise ProgramError(f"func={func!r} is not a C identifier. Fix: name the filter's entry function.")
    if func.startswith(RESERVED):
        raise ProgramError(f"func={func!r} is reserved: every name starting with {' or '.join(RESERVED)} is "
                           f"pktassert's own. Fix: rename the filter's entry function.")


def check_source(source: object) -> None:
    if not isinstance(source, (str, os.PathLike)):
        raise ProgramError(f"source={_short(source)} is {_a(source)}. Fix: pass the C source as a str, or a "
                           f"path (str or pathlib.Path) to a .c file.")
    if not str(source):
        raise ProgramError("source is empty. Fix: pass the C source text, or a path to a .c file.")


def check_cflags(cflags: object) -> tuple[str, ...]:
    """The flags as a tuple; refused when they would not reach clang one flag per item."""
    if isinstance(cflags, str):
        raise ProgramError(f"cflags={cflags!r} is one string: it must be a tuple or list of flags, one per "
                           f"item. Fix: cflags=({cflags!r},)")
    if not isinstance(cflags, (tuple, list)):
        raise ProgramError(f"cflags={_short(cflags)} is {_a(cflags)}. Fix: a tuple or list of strings, one flag "
                           f"per item: cflags=(\"-DPORT=80\",)")
    for i, flag in enumerate(cflags):
        if not isinstance(flag, str) or not flag:
            what = f"is {_a(flag)}, not a string" if not isinstance(flag, str) else "is empty"
            raise ProgramError(f"cflags item {i} ({_short(flag)}) {what}. Fix: each item is one clang flag as a "
                               f"string, e.g. \"-DPORT=80\".")
    if len(cflags) > 1 and all(len(f) == 1 for f in cflags):
        joined = "".join(cflags)
        raise ProgramError(f"cflags={_short(tuple(cflags))} is one string split into characters ({joined!r}): "
                           f"a string was given where a list of flags belongs (tuple() of a string). "
                           f"Fix: cflags=[{joined!r}]")
    for i, flag in enumerate(cflags):
        m = _MACRO_FLAG.fullmatch(flag.split("=")[0]) if flag.startswith(("-D", "-U")) else None
        name = m and (m.group(2) or (cflags[i + 1].split("=")[0] if i + 1 < len(cflags) else ""))
        if name and name.startswith(RESERVED) and name not in SETTABLE:
            shown = flag if m and m.group(2) else f"{flag} {cflags[i + 1]}"
            raise ProgramError(f"cflags {shown!r} sets {name}, a reserved name: every name starting with "
                               f"{' or '.join(RESERVED)} is pktassert's own (the one meant to be set is "
                               f"{', '.join(sorted(SETTABLE))}). Fix: use a name of your own.")
    return tuple(cflags)


def decode(data: bytes, name: str) -> str:
    """A source file's text: UTF-8, with a byte order mark dropped (clang would choke on it in the middle of
    the composed source)."""
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return check_text(data[skip:].decode("utf-8"), name)
    except UnicodeDecodeError as e:
        at = skip + e.start
        raise ProgramError(f"{name} is not UTF-8: byte 0x{data[at]:02x} at offset {at} ({_where(data, at)}). "
                           f"Fix: save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {name} > fixed.c` "
                           f"if it is Latin-1.") from None


def check_text(text: str, name: str) -> str:
    text = text.removeprefix("\ufeff")
    if "\0" in text:
        at = text.index("\0")
        raise ProgramError(f"{name} has a NUL byte at offset {at} ({_where(text, at)}): bcc would stop reading "
                           f"the source there. Fix: remove it.")
    try:
        text.encode()
    except UnicodeEncodeError as e:
        raise ProgramError(f"{name} has {text[e.start]!r} at offset {e.start} ({_where(text, e.start)}), which "
                           f"is not a Unicode character (a lone surrogate). Fix: decode the file as UTF-8.") from None
    return text


def code_only(text: str) -> str:
    """``text`` with comments and string literals blanked, lines and columns unchanged."""
    return _NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


# The context each hook's entry takes, as a bcc source spells it: an entry that takes another hook's
# is that hook's program.
CONTEXTS = {"xdp": ("xdp_md", "an XDP program", "@pytest.mark.xdp"),
            "tc": ("__sk_buff", "a tc classifier", "@pytest.mark.tc")}


def check_hook_ctx(name: str, func: str, text: str, hook: str) -> None:
    """That ``func``'s literal definition takes the context of ``hook`` (struct xdp_md for XDP,
    struct __sk_buff for tc), not another hook's."""
    m = re.search(rf"\b{func}\s*\(\s*(?:const\s+)?struct\s+(\w+)\s*\*", code_only(text))
    if not m:
        return
    other = next((h for h, (ctx, _, _) in CONTEXTS.items() if ctx == m.group(1) and h != hook), None)
    if other is not None:
        _, what, marker = CONTEXTS[other]
        raise ProgramError(f"{func}() in {name} takes struct {m.group(1)} *: it is {what}, not "
                           f"{CONTEXTS[hook][1]}. Fix: put it under {marker}(...), or give a function that "
                           f"takes struct {CONTEXTS[hook][0]} *.")


def check_entry(name: str, func: str, text: str) -> None:
    """That ``func`` can be the function the kernel runs. A literal definition is enough here; a name
    made by a macro is left to clang, which compose()'s flags make refuse an undefined entry."""
    code = code_only(text)
    macro = re.search(rf"^[ \t]*#[ \t]*define[ \t]+{func}\b(.*)$", code, re.MULTILINE)
    if macro:
        line = code.count("\n", 0, macro.start()) + 1
        body = macro.group(1).strip()
        target = body if re.fullmatch(r"[A-Za-z_]\w*", body) else None
        fix = (f"pass func={target!r} (the name the function really gets)" if target
               else "pass func= the name the entry function really gets, or drop the #define")
        raise ProgramError(f"func={func!r} is a macro in {name} (line {line}: "
                           f"{text.splitlines()[line - 1].strip()}), not a function: a definition written with "
                           f"that name defines another, and the kernel would run "
                           f"{f'{target}()' if target else 'what it expands to'}, not {func}(). Fix: {fix}.")
    if re.search(rf"\b{func}\b", code) or "##" in code:
        return
    defined = ", ".join(_FUNC_DEF.findall(code)) or "none"
    comment = f" {func} appears only in a comment or a string there." if re.search(rf"\b{func}\b", text) else ""
    raise ProgramError(f"{name} defines no function {func}(). Functions it defines: {defined}.{comment} "
                       f"Fix: pass func= the name of the XDP entry function `int NAME(struct xdp_md *ctx)`.")


def check_reserved(name: str, text: str, inspector: str) -> None:
    used = sorted(set(_RESERVED_NAME.findall(code_only(text))))
    if used:
        ours = sorted(n for n in set(_RESERVED_NAME.findall(inspector)) if n.islower())
        raise ProgramError(f"{name} uses names reserved for pktassert's inspector: {', '.join(used)}. Every name "
                           f"starting with {' or '.join(RESERVED)} is reserved (ours include {', '.join(ours)}). "
                           f"Fix: rename them.")


def _where(data: bytes | str, at: int) -> str:
    text = data if isinstance(data, bytes) else data.encode(errors="surrogateescape")
    line, start = text.count(b"\n", 0, at) + 1, text.rfind(b"\n", 0, at) + 1
    return f"line {line}, column {at - start + 1}"


def _a(value: object) -> str:
    kind = type(value).__name__
    return "bytes" if kind == "bytes" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _short(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."

