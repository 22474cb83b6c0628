#!/usr/bin/env bash
# Checks CloudOptim's container image without a container daemon (scripts/test.sh runs it after the
# cargo tests, on the binary they built):
#
#   scripts/check-image.sh [BINARY]     (default ${CARGO_TARGET_DIR:-target}/debug/cloudoptim)
#
# 1. builds the image with scripts/build-image.sh (twice: the same inputs must give the same digest)
# 2. pushes the OCI layout to a loopback registry (crane registry serve) and inspects it from the
#    outside: `crane validate`, `crane config` (USER 65532:65532 = the chart's runAsUser, ENTRYPOINT
#    /cloudoptim, the OCI labels, revision = $CLOUDOPTIM_COMMIT), `crane export | tar -tv` (the
#    binary, root-owned; nothing writable but /tmp; no setuid files)
# 3. extracts the image's filesystem, makes it read-only (a read-only bind mount, as the chart's
#    readOnlyRootFilesystem) and runs the binary inside it as the image runs it:
#    `chroot --userspec=65532:65532 ROOTFS /cloudoptim ...` with only the image's environment,
#    so the image's own glibc and libgcc_s are what it loads (listed from LD_DEBUG)
# 4. lints .github/workflows/*.yaml (YAML parse, actionlint)
#
# Needs root (chroot, mount) and crane/actionlint (e2e/tools/setup.sh builds them with Go). Without
# them it says what it skipped and fails when CLOUDOPTIM_E2E_REQUIRED=1 (as in CI).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BINARY=${1:-${CARGO_TARGET_DIR:-target}/debug/cloudoptim}
REQUIRED=${CLOUDOPTIM_E2E_REQUIRED:-0}
CACHE=${CLOUDOPTIM_E2E_CACHE:-$HOME/.cache/cloudoptim-e2e}
COMMIT=${CLOUDOPTIM_COMMIT:-}

say() { echo "check-image.sh: $*"; }
ok() { echo "check-image.sh: ok   $*"; }
fail() { echo "check-image.sh: FAIL $*" >&2; exit 1; }
skip() {
    echo "check-image.sh: SKIP $*" >&2
    [[ "$REQUIRED" == 1 ]] && fail "CLOUDOPTIM_E2E_REQUIRED=1 and: $*"
    exit 0
}

[[ -x "$BINARY" ]] || fail "no binary at $BINARY (build it first: cargo build)"
[[ $(id -u) == 0 ]] || skip "not root: chroot and the read-only bind mount need root"
if [[ -z "${CLOUDOPTIM_CRANE:-}" || -z "${CLOUDOPTIM_ACTIONLINT:-}" ]]; then
    command -v go >/dev/null || skip "no Go toolchain: crane and actionlint cannot be built"
    CLOUDOPTIM_E2E_SKIP="k8s etcd kwok helm lua moto cfnlint prometheus" e2e/tools/setup.sh >/dev/null
    # shellcheck disable=SC1091
    . "$CACHE/env.sh"
fi
CRANE=${CLOUDOPTIM_CRANE:?}
VERSION=$(awk -F'"' '/^\[package\]/{p=1} p && /^version *=/{print $2; exit}' Cargo.toml)

work=$(mktemp -d)
REG_PID="" MOUNTED=""
cleanup() {
    [[ -n "$MOUNTED" ]] && umount "$MOUNTED" 2>/dev/null
    [[ -n "$REG_PID" ]] && kill "$REG_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. build ----------------------------------------------------------------------------------------
say "binary $BINARY ($(stat -c %s "$BINARY") bytes), CLOUDOPTIM_COMMIT=${COMMIT:-<unset>}, version $VERSION"
scripts/build-image.sh "$BINARY" "$work/out" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; fail "scripts/build-image.sh failed"; }
digest=$(cat "$work/out/digest")
ok "built linux/amd64 image $digest from base packages: $(tr '\n' ' ' < "$work/out/base-packages")"
scripts/build-image.sh "$BINARY" "$work/again" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; fail "scripts/build-image.sh failed (second build)"; }
[[ $(cat "$work/again/digest") == "$digest" ]] \
    || fail "not reproducible: a second build gave $(cat "$work/again/digest"), the first $digest"
ok "reproducible: a second build gives the same digest"

# --- 2. inspect from the outside --------------------------------------------------------------------
: > "$work/registry.log"   # exists before the background job opens it
"$CRANE" registry serve --address 127.0.0.1:0 > "$work/registry.log" 2>&1 &
REG_PID=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
    [[ -n "$port" ]] && break
    sleep 0.1
done
[[ -n "$port" ]] || fail "crane registry serve did not start: $(cat "$work/registry.log")"
REF=127.0.0.1:$port/cloudoptim:check
"$CRANE" push "$work/out/oci" "$REF" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; fail "crane push of the OCI layout"; }
[[ $("$CRANE" digest "$REF" 2>/dev/null) == "$digest" ]] || fail "the pushed image's digest differs from $digest"
"$CRANE" validate --remote "$REF" >"$work/validate.log" 2>&1 || { cat "$work/validate.log" >&2; fail "crane validate"; }
ok "OCI layout pushes as $digest; crane validate: $(tail -1 "$work/validate.log" | sed 's/^[0-9\/ :]*//')"

"$CRANE" config "$REF" > "$work/config.json"
python3 scripts/dockerfile-final-stage.py Dockerfile "CLOUDOPTIM_COMMIT=$COMMIT" "VERSION=$VERSION" > "$work/stage.tsv" \
    || fail "cannot read the Dockerfile's final stage"
chart_uid=$(sed -n 's/^ *runAsUser: *\([0-9]*\).*/\1/p' charts/cloudoptim/templates/deployment.yaml | head -1)
python3 - "$work/config.json" "$work/stage.tsv" "$COMMIT" "$VERSION" "$chart_uid" <<'EOF' || fail "image config (above)"
import json, sys
cfg_all = json.load(open(sys.argv[1]))
cfg = cfg_all["config"]
commit, version, chart_uid = sys.argv[3], sys.argv[4], sys.argv[5]
stage = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
want_labels = {f[1]: (f[2] if len(f) > 2 else "") for f in stage if f[0] == "label"}
want_user = next(f[1] for f in stage if f[0] == "user")
want_ep = json.loads(next(f[1] for f in stage if f[0] == "entrypoint"))
errors = []
def check(cond, what):
    print(f"check-image.sh: {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        errors.append(what)
check((cfg_all.get("os"), cfg_all.get("architecture")) == ("linux", "amd64"),
      f"platform {cfg_all.get('os')}/{cfg_all.get('architecture')} (linux/amd64)")
check(cfg.get("User") == "65532:65532" == want_user,
      f"User {cfg.get('User')!r} = the Dockerfile's USER {want_user!r} = 65532:65532")
check(cfg.get("User", "").split(":")[0] == chart_uid,
      f"User's uid = the chart's runAsUser ({chart_uid})")
check(cfg.get("Entrypoint") == ["/cloudoptim"] == want_ep,
      f"Entrypoint {cfg.get('Entrypoint')} = the Dockerfile's ENTRYPOINT {want_ep}; Cmd {cfg.get('Cmd')} (none)")
check(not cfg.get("Cmd"), "no Cmd (the chart passes the subcommand as args)")
labels = cfg.get("Labels") or {}
for k in ["title", "description", "source", "licenses", "revision", "version"]:
    key = "org.opencontainers.image." + k
    check(key in labels and labels[key] == want_labels.get(key), f"label {key}={labels.get(key)!r} (Dockerfile: {want_labels.get(key)!r})")
check(set(labels) == set(want_labels), f"labels are exactly the Dockerfile's LABEL keys ({len(want_labels)})")
check(labels.get("org.opencontainers.image.licenses") == "Apache-2.0", "licenses = Apache-2.0")
check(labels.get("org.opencontainers.image.revision") == commit,
      f"revision = CLOUDOPTIM_COMMIT ({commit or '<unset>: empty'})")
check(labels.get("org.opencontainers.image.version") == version, f"version = Cargo.toml's {version}")
env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
check(env.get("SSL_CERT_FILE") == "/etc/ssl/certs/ca-certificates.crt" and "PATH" in env,
      f"Env as distroless: {sorted(env)}")
check(cfg.get("WorkingDir") == "/home/nonroot", f"WorkingDir {cfg.get('WorkingDir')} (distroless nonroot)")
if errors:
    sys.exit(1)
EOF

# Layer contents: what a reader of the image sees (crane export flattens the layers).
"$CRANE" export "$REF" - > "$work/fs.tar"
tar -tvf "$work/fs.tar" --numeric-owner > "$work/fs.list"
python3 - "$work/fs.list" <<'EOF' || fail "image filesystem (above)"
import sys
entries = {}
for line in open(sys.argv[1]):
    f = line.split(None, 5)
    mode, owner, path = f[0], f[1], f[5].rstrip("\n").split(" -> ")[0]
    entries[path.rstrip("/")] = (mode, owner)
errors = []
def check(cond, what):
    print(f"check-image.sh: {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        errors.append(what)
check(entries.get("cloudoptim") == ("-rwxr-xr-x", "0/0"), f"/cloudoptim {entries.get('cloudoptim')} (-rwxr-xr-x root)")
for p in ["etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/os-release",
          "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "usr/lib64/ld-linux-x86-64.so.2"]:
    check(p in entries, f"/{p} present")
writable = sorted(p for p, (m, _) in entries.items() if m[0] != "l" and m[8] == "w")
check(writable == ["tmp"] and entries["tmp"][0] == "drwxrwxrwt", f"world-writable: only {writable} (/tmp, sticky)")
not_root = sorted(p for p, (_, o) in entries.items() if o != "0/0")
check(not_root == ["home/nonroot"], f"owned by anyone but root: only {not_root} (nonroot's home, as distroless)")
setid = sorted(p for p, (m, _) in entries.items() if m[3] in "sS" or m[6] in "sS")
check(not setid, f"no setuid/setgid files {setid}")
shells = sorted(p for p, (m, _) in entries.items() if m[0] != "d" and p.split("/")[-1] in ("sh", "bash", "dash", "busybox", "apt", "dpkg"))
check(not shells, f"no shell or package manager {shells}")
print(f"check-image.sh: ok   {len(entries)} entries in the image filesystem")
if errors:
    sys.exit(1)
EOF
grep -q "^65532:65532" <(awk -F: '$1=="nonroot"{print $3":"$4}' <(tar -xOf "$work/fs.tar" etc/passwd)) \
    || fail "/etc/passwd has no nonroot 65532:65532"
certs=$(tar -xOf "$work/fs.tar" etc/ssl/certs/ca-certificates.crt | grep -c 'BEGIN CERTIFICATE')
((certs > 100)) || fail "CA bundle has $certs certificates"
ok "/etc/passwd: nonroot = 65532:65532; CA bundle: $certs certificates"

# --- 3. run it inside its own filesystem, read-only, as uid/gid 65532 -----------------------------
rootfs="$work/rootfs"
mkdir -p "$rootfs"
tar -xf "$work/fs.tar" -C "$rootfs" --numeric-owner --same-permissions
if mount --bind "$rootfs" "$rootfs" 2>/dev/null && MOUNTED=$rootfs && mount -o remount,bind,ro "$rootfs" 2>/dev/null; then
    if touch "$rootfs/tmp/.w" 2>/dev/null; then fail "the read-only bind mount is writable"; fi
    ok "root filesystem mounted read-only (also /tmp: readOnlyRootFilesystem with no emptyDir)"
else
    # No mount privilege: take write permission away instead (binding for uid 65532, not for root).
    chmod -R a-w "$rootfs"
    ok "root filesystem made read-only by permissions (no mount privilege here)"
fi
CHROOT=$(command -v chroot)
# Only the image's own environment (its config's Env), nothing of this machine's.
mapfile -t image_env < <(python3 -c 'import json,sys; [print(e) for e in json.load(open(sys.argv[1]))["config"].get("Env") or []]' "$work/config.json")
run() { env -i "${image_env[@]}" "$CHROOT" --userspec=65532:65532 "$rootfs" /cloudoptim "$@"; }

out=$(run --version 2>&1) || fail "/cloudoptim --version in the image failed: $out"
want="cloudoptim $VERSION (commit ${COMMIT:-unknown})"
[[ "$out" == "$want" ]] || fail "/cloudoptim --version printed '$out', want '$want' (was the binary built with this CLOUDOPTIM_COMMIT?)"
ok "chroot --userspec=65532:65532 ROOTFS /cloudoptim --version: $out"
# Which libraries the binary loaded, and from where: the loader that runs it is the image's, and the
# paths it reports are inside the chroot. (chroot(1) itself is this machine's and logs first: the
# binary's part starts where the loader looks for what /cloudoptim needs.)
libs=$(env -i "${image_env[@]}" LD_DEBUG=files "$CHROOT" --userspec=65532:65532 "$rootfs" /cloudoptim --version 2>&1 >/dev/null \
    | awk '/needed by \/cloudoptim/{on=1} on && /calling init:/{l=l" "$NF} on && /initialize program: \/cloudoptim/{print l; exit}')
[[ -n "$libs" ]] || fail "LD_DEBUG listed no libraries for /cloudoptim"
for lib in $libs; do
    [[ -e "$rootfs$lib" ]] || fail "the binary loaded $lib, which is not in the image"
done
ok "libraries loaded (all from the image's filesystem):$libs"

out=$(run plan 2>&1) || fail "/cloudoptim plan in the image failed: $out"
grep -q "^CloudOptim plan for" <<< "$out" || fail "/cloudoptim plan printed no 'CloudOptim plan for': $out"
grep -q "^COST " <<< "$out" || fail "/cloudoptim plan printed no COST table: $out"
ok "chroot --userspec=65532:65532 ROOTFS /cloudoptim plan: $(head -1 <<< "$out"); $(grep -m1 'per hour' <<< "$out" | tr -s ' ')"

# --- 4. the release workflow ---------------------------------------------------------------------------
py=python3
python3 -c 'import yaml' 2>/dev/null || py="$(dirname "${CLOUDOPTIM_CFN_LINT:-/nonexistent/x}")/python"
"$py" -c 'import yaml' 2>/dev/null || fail "no Python with PyYAML (python3, or cfn-lint's venv from e2e/tools/setup.sh)"
for wf in .github/workflows/*.yaml; do
    "$py" - "$wf" <<'EOF' || fail "$wf is not valid YAML"
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
assert isinstance(doc, dict) and "jobs" in doc and (True in doc or "on" in doc), "no on:/jobs:"
EOF
    "$CLOUDOPTIM_ACTIONLINT" -no-color "$wf" || fail "actionlint $wf"
    ok "$wf: YAML parses; actionlint $("$CLOUDOPTIM_ACTIONLINT" --version | head -1) clean"
done
say "all image checks passed ($digest)"
