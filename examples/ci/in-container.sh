#!/usr/bin/env bash
# What a CI job runs in a fresh Debian 12 container started with --privileged (GitHub Actions'
# `container: {image: debian:12, options: --privileged}`, a GitLab runner with privileged = true):
# install make, then the README's own command for the example suite. The JUnit file and the
# evidence folder (pcapng of failed tests) are left in the checkout for the job to upload.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v make >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
fi
make demo ARGS="--junitxml=pktassert-junit.xml --pktassert-evidence-dir=pktassert-evidence"
