#!/usr/bin/env bash
# Builds CloudOptim's container image without a container daemon, from an already built binary:
# the layout the Dockerfile gives (the final stage's base, COPY destination, USER, ENTRYPOINT and
# LABELs, read from the Dockerfile itself), for linux/amd64.
#
#   scripts/build-image.sh BINARY OUT_DIR
#
# Writes to OUT_DIR:
#   oci/          the image as an OCI image layout (`crane push OUT_DIR/oci REF` pushes it as is;
#                 `tar -cC OUT_DIR/oci . | docker load` loads it into Docker 25+)
#   digest        the image manifest's digest (sha256:...)
#   base-packages the Debian packages (name=version) the base layer was assembled from
#
# Env: CLOUDOPTIM_COMMIT (the org.opencontainers.image.revision label; empty when unset, as the
# Dockerfile's default), VERSION (the version label; default: Cargo.toml's package version),
# CLOUDOPTIM_CRANE (crane; default: built by e2e/tools/setup.sh), SOURCE_DATE_EPOCH (file times in
# the layers; default 0, so the same inputs give the same digest).
#
# The base: gcr.io/distroless/cc-debian12:nonroot cannot be pulled here (no registry access), so
# the base layer is assembled the way distroless assembles it, from the Debian 12 packages
# (apt-get download + dpkg-deb, usr-merged): libc6, libgcc-s1 (+ gcc-12-base, its copyright only
# package), netbase, /etc/os-release from base-files, the CA bundle built from ca-certificates'
# Mozilla certificates, /etc/passwd and /etc/group (root, nobody, nonroot 65532), nsswitch.conf,
# /tmp (1777), /home/nonroot (65532), the dpkg status.d entries scanners read, and distroless's
# config (PATH, SSL_CERT_FILE, WorkingDir /home/nonroot). It is a subset of cc-debian12: that image
# also has tzdata, libssl3, libstdc++6 and libgomp1, which CloudOptim does not load (`ldd`: libc,
# libm, libgcc_s; time zones come from chrono-tz, TLS from rustls/ring). So the binary running in
# this base (scripts/check-image.sh) runs in the real one. Cached in
# $CLOUDOPTIM_E2E_CACHE/image-base/<hash of the package versions and this recipe>/.
#
# arm64: this script assembles linux/amd64 only (it needs the binary for the image's architecture
# and this machine builds amd64); the release workflow builds both with docker buildx.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "build-image.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 2 ]] || die "usage: scripts/build-image.sh BINARY OUT_DIR"
BINARY=$(realpath "$1")
OUT=$2
[[ -f "$BINARY" && -x "$BINARY" ]] || die "$1 is not an executable file"
CACHE=${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}
EPOCH=${SOURCE_DATE_EPOCH:-0}
BASE_REF=gcr.io/distroless/cc-debian12:nonroot
# Bump when the base recipe below changes, so the cached base layer is rebuilt.
RECIPE=3

# --- the binary's architecture ------------------------------------------------------------------
machine=$(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(20); print("elf" if d[:4]==b"\x7fELF" else "not-elf", int.from_bytes(d[18:20],"little"))' "$BINARY")
case "$machine" in
    "elf 62") ARCH=amd64 ;;
    "elf 183") die "$1 is an arm64 binary: arm64 images are built by the release workflow (docker buildx, .github/workflows/release.yaml); this script assembles linux/amd64 only" ;;
    *) die "$1 is not an x86_64 ELF executable ($machine)" ;;
esac

# --- crane ----------------------------------------------------------------------------------------
if [[ -z "${CLOUDOPTIM_CRANE:-}" ]]; then
    CLOUDOPTIM_E2E_SKIP="k8s etcd kwok helm lua actionlint moto cfnlint prometheus" "$ROOT/e2e/tools/setup.sh" >/dev/null
    # shellcheck disable=SC1091
    . "$CACHE/env.sh"
fi
CRANE=${CLOUDOPTIM_CRANE:?crane not built (e2e/tools/setup.sh, needs Go)}

# --- the Dockerfile's final stage -----------------------------------------------------------------
VERSION=${VERSION:-$(awk -F'"' '/^\[package\]/{p=1} p && /^version *=/{print $2; exit}' "$ROOT/Cargo.toml")}
COMMIT=${CLOUDOPTIM_COMMIT:-}
STAGE=$(python3 "$ROOT/scripts/dockerfile-final-stage.py" "$ROOT/Dockerfile" \
    "CLOUDOPTIM_COMMIT=$COMMIT" "VERSION=$VERSION") || die "cannot read the Dockerfile's final stage"
FROM="" USER_="" ENTRYPOINT="" COPY_DEST="" LABELS=()
while IFS=$'\t' read -r kind a b; do
    case "$kind" in
        from) FROM=$a ;;
        user) USER_=$a ;;
        entrypoint) ENTRYPOINT=$a ;;
        copy) [[ -z "$COPY_DEST" ]] || die "more than one COPY in the final stage"; COPY_DEST=$b ;;
        label) LABELS+=("$a=$b") ;;
    esac
done <<< "$STAGE"
[[ "$FROM" == "$BASE_REF" ]] || die "the Dockerfile's final stage is FROM $FROM; this script reproduces $BASE_REF only"
[[ -n "$USER_" && -n "$ENTRYPOINT" && "$COPY_DEST" == /* ]] || die "final stage lacks USER, ENTRYPOINT or COPY"
# The entrypoint as crane's comma-separated list (no element may hold a comma).
EP_CSV=$(python3 -c 'import json,sys; e=json.loads(sys.argv[1]); assert all("," not in x for x in e); print(",".join(e))' "$ENTRYPOINT") \
    || die "ENTRYPOINT elements must not contain commas"

# --- base layer (cached) --------------------------------------------------------------------------
PKGS=(libc6 libgcc-s1 gcc-12-base netbase base-files ca-certificates)
pkg_versions() {
    apt-cache show --no-all-versions "${PKGS[@]/%/:$ARCH}" 2>/dev/null \
        | awk '/^Package:/{p=$2} /^Version:/{print p"="$2}'
}
versions=$(pkg_versions || true)
if [[ $(wc -l <<< "$versions") -ne ${#PKGS[@]} || -z "$versions" ]]; then
    [[ $(id -u) == 0 ]] || die "apt has no lists for ${PKGS[*]} and this is not root: run apt-get update"
    log "apt-get update (no package lists) ..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    versions=$(pkg_versions)
fi
[[ $(wc -l <<< "$versions") -eq ${#PKGS[@]} ]] || die "apt-cache does not know all of ${PKGS[*]}: $versions"
grep -q '^libc6=2\.36-' <<< "$versions" \
    || die "apt's libc6 is not Debian 12's (2.36-*): $(grep '^libc6=' <<< "$versions"); the base must match distroless debian12"
key=$( { echo "recipe=$RECIPE arch=$ARCH epoch=$EPOCH"; echo "$versions"; } | sha256sum | cut -c1-16)
BASE_DIR="$CACHE/image-base/$ARCH-$key"
if [[ ! -f "$BASE_DIR/base.tar" ]]; then
    log "assembling the distroless-cc-equivalent base from: $(tr '\n' ' ' <<< "$versions")"
    tmp=$(mktemp -d "$CACHE/image-base.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    chmod 0755 "$tmp"   # apt's _apt user downloads into it when run as root
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "${PKGS[@]/%/:$ARCH}" >&2) || die "apt-get download failed"
    rootfs="$tmp/rootfs"
    mkdir -p "$rootfs"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,etc/ssl/certs,var/lib/dpkg/status.d,root,home/nonroot,tmp}
    # Debian 12 (and distroless debian12) are usr-merged: /bin, /sbin, /lib, /lib64 are links into /usr.
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done
    extract() {   # extract DEB [PATH...]: unpack the package's files (all, or only PATHs) into the rootfs
        local deb=$1; shift
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$rootfs" --keep-directory-symlink --no-same-owner "$@"
    }
    status() {    # status DEB: the dpkg status entry vulnerability scanners read (as distroless writes)
        local name
        name=$(dpkg-deb -f "$1" Package)
        { dpkg-deb -f "$1"; echo "Status: install ok installed"; } > "$rootfs/var/lib/dpkg/status.d/$name"
    }
    for p in libc6 libgcc-s1 gcc-12-base netbase; do
        deb=$(ls "$tmp"/"${p}"_*.deb)
        extract "$deb"
        status "$deb"
    done
    deb=$(ls "$tmp"/base-files_*.deb)
    extract "$deb" ./etc/os-release ./usr/lib/os-release ./usr/share/doc/base-files/copyright
    grep -q '^VERSION_CODENAME=bookworm' "$rootfs/etc/os-release" "$rootfs/usr/lib/os-release" 2>/dev/null \
        || die "base-files is not Debian 12 (bookworm)"
    status "$deb"
    # The CA bundle as update-ca-certificates writes it from the package's Mozilla certificates
    # (and as distroless does): never this machine's /etc/ssl/certs, which may hold local CAs.
    deb=$(ls "$tmp"/ca-certificates_*.deb)
    mkdir -p "$tmp/ca"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/ca" ./usr/share/ca-certificates/mozilla ./usr/share/doc/ca-certificates/copyright
    # shellcheck disable=SC1003  # sed's `$a\`: end the file with a newline, as update-ca-certificates
    find "$tmp/ca/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 | LC_ALL=C sort -z \
        | while IFS= read -r -d '' crt; do sed -e '$a\' "$crt"; done > "$rootfs/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$rootfs/usr/share/doc/ca-certificates"
    cp "$tmp/ca/usr/share/doc/ca-certificates/copyright" "$rootfs/usr/share/doc/ca-certificates/"
    status "$deb"
    # Users and groups: distroless's, byte for byte in meaning (root, nobody, nonroot).
    cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    cat > "$rootfs/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      db files
services:       db files
ethers:         db files
rpc:            db files
EOF
    chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf,ssl/certs/ca-certificates.crt}
    chmod 0700 "$rootfs/root" "$rootfs/home/nonroot"
    chmod 1777 "$rootfs/tmp"
    # Everything root-owned but /home/nonroot (65532), fixed times: the same inputs, the same layer.
    (cd "$rootfs" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort > "$tmp/top")
    tar_() { tar --format=gnu --sort=name --numeric-owner --mtime="@$EPOCH" --no-recursion "$@"; }
    (cd "$rootfs" && find . -mindepth 1 ! -path ./home/nonroot -printf '%P\n' | LC_ALL=C sort \
        | tar_ -cf "$tmp/base.tar" --owner=0 --group=0 -T -)
    (cd "$rootfs" && tar_ -rf "$tmp/base.tar" --owner=65532 --group=65532 home/nonroot)
    printf '%s\n' "$versions" > "$tmp/base-packages"
    mkdir -p "$BASE_DIR"
    mv "$tmp/base-packages" "$BASE_DIR/base-packages"
    mv "$tmp/base.tar" "$BASE_DIR/base.tar.part"
    mv "$BASE_DIR/base.tar.part" "$BASE_DIR/base.tar"
    rm -rf "$tmp"
    trap - EXIT
fi

# --- the image ------------------------------------------------------------------------------------
work=$(mktemp -d)
REG_PID=""
cleanup() { [[ -n "$REG_PID" ]] && kill "$REG_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
crane() {   # crane ARGS...: its progress lines go to a log shown only when it fails
    "$CRANE" "$@" 2>>"$work/crane.log" || { cat "$work/crane.log" >&2; die "crane $1 failed"; }
}
trap cleanup EXIT
# The binary's layer: what `COPY --from=build /out/cloudoptim /cloudoptim` adds (root-owned, 0755).
mkdir -p "$work/app/$(dirname "$COPY_DEST")"
install -m 0755 "$BINARY" "$work/app$COPY_DEST"
(cd "$work/app" && tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$EPOCH" -cf "$work/app.tar" "${COPY_DEST#/}")

# A registry in this process's memory on a loopback port: crane mutate works on registry refs.
: > "$work/registry.log"   # exists before the background job opens it
"$CRANE" registry serve --address 127.0.0.1:0 > "$work/registry.log" 2>&1 &
REG_PID=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
    [[ -n "$port" ]] && break
    kill -0 "$REG_PID" 2>/dev/null || die "crane registry serve exited: $(cat "$work/registry.log")"
    sleep 0.1
done
[[ -n "$port" ]] || die "crane registry serve did not start"
REG=127.0.0.1:$port

base="$REG/distroless-cc-equivalent:nonroot"
crane append --oci-empty-base --platform "linux/$ARCH" -f "$BASE_DIR/base.tar" -t "$base.layer" >/dev/null
crane mutate "$base.layer" -t "$base" --set-platform "linux/$ARCH" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --user 65532 --workdir /home/nonroot >/dev/null
ref="$REG/cloudoptim:$VERSION"
crane append -b "$base" -f "$work/app.tar" -t "$ref.layer" >/dev/null
label_args=()
for l in "${LABELS[@]}"; do
    # crane reads -l as CSV: quote each key=value so a comma in a value stays in it.
    label_args+=(-l "\"${l//\"/\"\"}\"")
done
crane mutate "$ref.layer" -t "$ref" --user "$USER_" --entrypoint "$EP_CSV" "${label_args[@]}" >/dev/null

mkdir -p "$OUT"
rm -rf "$OUT/oci"
crane pull --format=oci "$ref" "$OUT/oci"
crane digest "$ref" > "$OUT/digest"
cp "$BASE_DIR/base-packages" "$OUT/base-packages"
log "linux/$ARCH image $(cat "$OUT/digest") in $OUT/oci (OCI layout); base $BASE_DIR"
cat "$OUT/digest"
