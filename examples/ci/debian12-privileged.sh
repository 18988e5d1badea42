#!/usr/bin/env bash
# A privileged container without a container engine: a Debian 12 root file system (debootstrap,
# from the host's own Debian mirror) entered in new mount, PID, UTS, IPC and network namespaces,
# with /proc, /sys and /dev as `docker run --privileged` gives them (no tracefs, debugfs or bpffs),
# running in-container.sh as a CI job would. Packages are installed first, with the network; the
# suite then runs offline in the container's own network namespace. `make container-test` runs it.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
rootfs=${PKTASSERT_ROOTFS:-/var/tmp/pktassert-debian12}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  rm -rf "$rootfs.new" "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs.new" "$mirror" >/dev/null
  mv -T "$rootfs.new" "$rootfs"
fi
# The checkout as a CI job gets it: a clone of the committed tree (uncommitted changes are not in it).
rm -rf "$rootfs/src" && git clone -q "$here" "$rootfs/src"
echo "container: testing commit $(git -C "$rootfs/src" rev-parse --short HEAD) of $here"

enter() {  # enter NETNS-FLAG COMMAND...: the container's namespaces and mounts, then chroot
  local net=$1; shift
  unshare --mount --uts --ipc --pid --fork --kill-child $net --propagation private -- bash -c '
    set -e; r=$1; shift
    mount -t proc proc "$r/proc"
    mount -t sysfs sysfs "$r/sys"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/tmp"
    mount -t tmpfs tmpfs "$r/run"
    cp /etc/resolv.conf "$r/etc/resolv.conf"
    hostname pktassert-ci
    exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 "$@"' container "$rootfs" "$@"
}

# With the network: what the job's first steps download (apt packages, the venv's wheels). A runner
# behind a TLS-inspecting proxy gives its jobs its CA bundle; so does this one (the host's, if any).
cert=""
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$rootfs/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/runner-ca.crt"
  cert="PIP_CERT=/etc/ssl/runner-ca.crt SSL_CERT_FILE=/etc/ssl/runner-ca.crt"
fi
enter "" bash -c "cd /src && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make git \
  >/dev/null && $cert make -s setup objects >/dev/null"
# The job itself, in the container's own network namespace.
enter --net bash /src/examples/ci/in-container.sh
