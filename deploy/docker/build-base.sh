#!/usr/bin/env bash
# A Debian bookworm base image with python3.11 and venv, built from Debian's packages (debootstrap), for machines
# that reach a Debian mirror and PyPI but no image registry. Pass it to the builds: --build-arg BASE_IMAGE=<tag>.
#   sudo deploy/docker/build-base.sh [tag] [mirror]
# CA_BUNDLE (default: the host's /etc/ssl/certs/ca-certificates.crt) is copied in, so pip inside the builds trusts
# what the host trusts (a TLS-inspecting proxy's CA included).
set -euo pipefail
tag=${1:-cowest-base:bookworm}
mirror=${2:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
cp "${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
docker image ls "$tag"
