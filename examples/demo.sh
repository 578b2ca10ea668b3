#!/usr/bin/env bash
# A real deployment on rollout's local test fleet: two simulated hosts (own Nix store, own sshd),
# two profiles each (root's `system`, and `app` owned by the non-root user `hello`), deployed by
# the ssh user `deploy` through sudo; then a change that cuts host2 off, undone by magic rollback.
# Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-$(pwd)/target}/debug
LAB=$BIN/rollout-lab
ROLLOUT=$BIN/rollout
STATE=$(mktemp -d /tmp/rollout-demo-XXXXXX)
WORK=$(mktemp -d /tmp/rollout-demo-flake-XXXXXX)
cleanup() {
  "$LAB" down --state "$STATE" > /dev/null 2>&1 || true
  rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

rmdir "$STATE"
"$LAB" up 2 --state "$STATE" --port 0   # a free port
SYSTEM=$(nix --extra-experimental-features nix-command eval --impure --raw --expr builtins.currentSystem)
write_flake() {
  sed -e "s|@SYSTEM@|$SYSTEM|" -e "s|@SSH_CONFIG@|$STATE/ssh_config|" -e "s|@VARIANT@|$1|" \
    examples/demo/flake.nix.in > "$WORK/flake.nix"
}
show() {
  for h in host1 host2; do
    "$LAB" exec "$h" --state "$STATE" -- sh -c \
      'echo "'"$h"': system -> $(readlink /nix/var/nix/profiles/system) ($(cat /nix/var/nix/profiles/system/motd))"
       echo "'"$h"': app    -> $(readlink /nix/var/nix/profiles/per-user/hello/app) ($(cat /nix/var/nix/profiles/per-user/hello/app/motd))"'
  done
}

say "1. The plan (rollout plan): evaluated once, validated, nothing touched"
write_flake v1
"$ROLLOUT" plan "$WORK" -s | sed -n 1,30p

say "2. Deploy v1 to both hosts in parallel"
"$ROLLOUT" "$WORK" -s
show

say "3. Deploy a 'broken' v2 to host2: its activation kills sshd; no fresh SSH login can confirm"
write_flake broken
if "$ROLLOUT" "$WORK#host2" -s; then
  echo "unexpected: the broken deploy was confirmed" >&2
  exit 1
else
  echo "rollout exited $? (4 = failed and rolled back)" >&2
fi
say "host2 is back on v1 (magic rollback), its sshd aside"
show

say "4. rollout status: what runs where (host2's sshd is still down: reported, not fatal)"
write_flake v2
"$ROLLOUT" status "$WORK" -s || echo "rollout status exited $? (3 = a host did not answer)" >&2
"$LAB" restart-sshd host2 --state "$STATE" > /dev/null

say "5. rollout diff: what deploying v2 would change"
"$ROLLOUT" diff "$WORK" -s

say "6. Deploy v2, then the status and host1's history"
"$ROLLOUT" "$WORK" -s > /dev/null 2>&1
"$ROLLOUT" status "$WORK" -s
"$ROLLOUT" history "$WORK#host1.system" -s

say "7. rollout rollback .#host1: host1 goes back to v1 (a deploy of generation 1 with every guarantee)"
"$ROLLOUT" rollback "$WORK#host1" -s 2>&1 | grep -E '^rollout: (host1.*rolling back|\[host1\.(system|app)\] deployed)' || true
"$ROLLOUT" status "$WORK" -s || echo "rollout status exited $? (5 = some profile differs from the flake)" >&2
show
say "Done; stopping the fleet"
