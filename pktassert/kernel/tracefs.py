"""tracefs of pktassert's own: a mount made with the kernel's mount API (fsopen/fsmount) and never
attached anywhere, held only by a file descriptor.

No host promises tracefs at /sys/kernel/tracing (a fresh machine, a privileged container), and
mounting it there would change the host. A detached mount is seen by no other process, is in no
mount table (``findmnt`` shows nothing) and goes with the fd: also when the process is killed.
tracefs has one superblock per kernel, so what is made through it (an instance) is the kernel's,
as through any other mount of it: the process's reaper (pktassert/machine/reaper.py) holds a copy of the fd
to remove the instance if the process dies without doing so."""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

from pktassert.errors import HostLacks

# include/uapi/linux/mount.h; the syscall numbers are the same on every architecture since 5.1.
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(what: str, number: int, *args: object) -> int:
    fd = _libc.syscall(number, *args)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(fd)


@functools.cache
def _mount_fd() -> int:
    """A detached tracefs mount for this process (made once; the kernel frees it at exit)."""
    fs = _call("fsopen(tracefs)", _SYS_FSOPEN, b"tracefs", _FSOPEN_CLOEXEC)
    try:
        _call("fsconfig(create)", _SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0)
        return _call("fsmount", _SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC,
                     _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC)
    finally:
        os.close(fs)


def mount_fd() -> int:
    """The file descriptor of this process's detached tracefs mount (made on first use)."""
    try:
        return _mount_fd()
    except OSError as e:
        raise HostLacks("tracefs", f"pktassert cannot mount tracefs for itself ({e}): the kernel lacks tracefs "
                                   f"(CONFIG_TRACING) or the mount API (Linux 5.2), or a seccomp profile forbids "
                                   f"mounts. Fix: a privileged container (--privileged) on a kernel with tracing.") from None


def root() -> Path:
    """tracefs' top folder, through this process's own detached mount."""
    # /proc/self/fd/N is the mount's root itself (a magic link), so plain paths work under it.
    return Path(f"/proc/self/fd/{mount_fd()}")
