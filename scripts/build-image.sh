#!/usr/bin/env bash
# Build the project's OCI image with no registry pull (containers/Dockerfile).
#
#   scripts/build-image.sh [TAG]          default localhost/vhi:<package version>
#
# Writes the image into podman's storage as TAG and, as an OCI archive, to
# dist/vhi-<version>.oci.tar (ARCHIVE=<path> elsewhere, ARCHIVE= not at all): the file the
# config's `image` names by default, which Apptainer runs (`apptainer build vhi.sif
# oci-archive://dist/vhi-<version>.oci.tar`, or Snakemake's apptainer deployment directly).
# The archive is written again only when the image changed.
#
# 1. Base: Debian bookworm made by `debootstrap --variant=minbase` (python3, venv), cached
#    as a tarball under $VHI_CACHE (default ~/.cache/vhi) and imported into podman as
#    localhost/vhi-base:bookworm. With BASE=<image> (e.g. python:3.11-slim-bookworm, a CUDA
#    base) where a registry is reachable, this step is skipped.
# 2. `buildah bud --isolation chroot` with BASE as a build argument. pip in the build reaches
#    the index over HTTPS with the host's CA bundle, mounted read-only for the build only
#    (PIP_CERT; never copied into the image or the repository), and takes wheels such as
#    torch from a local folder (PIP_FIND_LINKS, default: the host's, if it has one).
# podman and buildah read the project-local containers/containers.conf (CONTAINERS_CONF).
# Needs root (or a working rootless podman), podman, buildah, runc, debootstrap
# (scripts/system-packages/containers.list). Weights are never baked in: mount them at run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
tag="${1:-localhost/vhi:${version}}"
archive="${ARCHIVE-$root/dist/vhi-${version}.oci.tar}"
cache="${VHI_CACHE:-$HOME/.cache/vhi}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/containers/containers.conf}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ca="${HOST_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"
wheels="${WHEELS:-${PIP_FIND_LINKS:-}}"
log() { echo "build-image: $*" >&2; }

for tool in podman buildah; do
  command -v "$tool" >/dev/null || { log "$tool not found (scripts/install-system-packages.sh)"; exit 2; }
done

base="${BASE:-}"
if [ -z "$base" ]; then
  base=localhost/vhi-base:$suite
  if ! podman image exists "$base"; then
    tarball="$cache/$suite-minbase-python3.tar"
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null || { log "debootstrap not found"; exit 2; }
      mkdir -p "$cache"
      rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
      trap 'rm -rf "$rootfs"' EXIT
      log "debootstrap --variant=minbase $suite (python3, venv) from $mirror"
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
      rm -rf "$rootfs"; trap - EXIT
    fi
    log "importing $tarball as $base"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
  fi
fi

args=(--isolation chroot --layers -f "$root/containers/Dockerfile" -t "$tag" --build-arg "BASE=$base")
if [ -r "$ca" ]; then
  args+=(--volume "$ca:/run/vhi-build/ca.crt:ro" --build-arg PIP_CERT=/run/vhi-build/ca.crt)
fi
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  args+=(--volume "$wheels:/run/vhi-build/wheels:ro" --build-arg PIP_FIND_LINKS=/run/vhi-build/wheels)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  # Only http(s) indexes reach into the build (file:// folders of the host are not mounted).
  value="${!var:-}"; case "$value" in http*) args+=(--build-arg "$var=$value");; esac
done
log "buildah bud $tag (base $base)"
buildah bud "${args[@]}" "$root"
podman image exists "$tag"
log "built $tag: $(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
if [ -n "$archive" ]; then
  id="$(podman image inspect --format '{{.Id}}' "$tag")"
  if [ ! -s "$archive" ] || [ "$(cat "$archive.id" 2>/dev/null)" != "$id" ]; then
    mkdir -p "$(dirname "$archive")"
    rm -f "$archive.part" "$archive.id"
    podman save --format oci-archive -o "$archive.part" "$tag"
    mv "$archive.part" "$archive"
    echo "$id" >"$archive.id"
  fi
  log "OCI archive $archive ($(du -h "$archive" | cut -f1)): the config's default image"
fi
