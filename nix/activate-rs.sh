# deploy-rs's target-side protocol (`activate-rs activate|wait|revoke`), for profiles built with
# rollout's library: deploy-rs's `deploy` calls <profile>/activate-rs, so this shim lets a team
# go back to deploy-rs (or mix the two) without rebuilding its profiles with deploy-rs's library.
# rollout never runs it (it uses <profile>/rollout-agent). Behaviour follows deploy-rs d5eff7f:
#   activate CLOSURE (--profile-path P | --profile-user U --profile-name N) --temp-path T
#            --confirm-timeout C [--magic-rollback] [--auto-rollback] [--dry-activate] [--boot]
#   wait CLOSURE --temp-path T [--activation-timeout A]       (A defaults to 240)
#   revoke (--profile-path P | --profile-user U --profile-name N)
# with the global options -d/--debug-logs and --log-dir D accepted (logging goes to stderr).
set -u

# The activation must outlive the ssh session that started it (deploy-rs ignores SIGHUP too).
trap '' HUP

log() { printf 'activate-rs (rollout shim): %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cmd=""
closure=""
profile_path=""
profile_user=""
profile_name=""
temp_path=""
confirm_timeout=""
activation_timeout=240
magic=0
auto=0
dry=0
boot=0

while [ $# -gt 0 ]; do
  case "$1" in
    -d|--debug-logs) ;;
    --log-dir) shift ;;
    --log-dir=*) ;;
    activate|wait|revoke) [ -z "$cmd" ] || die "unexpected argument: $1"; cmd=$1 ;;
    --profile-path) shift; profile_path=${1-} ;;
    --profile-user) shift; profile_user=${1-} ;;
    --profile-name) shift; profile_name=${1-} ;;
    --temp-path) shift; temp_path=${1-} ;;
    --confirm-timeout) shift; confirm_timeout=${1-} ;;
    --activation-timeout) shift; activation_timeout=${1-} ;;
    --magic-rollback) magic=1 ;;
    --auto-rollback) auto=1 ;;
    --dry-activate) dry=1 ;;
    --boot) boot=1 ;;
    -*) die "unknown option: $1" ;;
    *) [ -n "$cmd" ] && [ -z "$closure" ] || die "unexpected argument: $1"; closure=$1 ;;
  esac
  shift
done

number() { case "$2" in ''|*[!0-9]*) die "--$1 expects a number of seconds, got '$2'" ;; esac; }

# Where the profile lives, as deploy-rs computes it on the target.
resolve_profile() {
  if [ -n "$profile_path" ]; then
    printf '%s' "$profile_path"
    return
  fi
  [ -n "$profile_user" ] && [ -n "$profile_name" ] || die "expected --profile-path or --profile-user and --profile-name"
  case "$profile_user/$profile_name" in
    */*/*|*..*) die "invalid profile user or name" ;;
  esac
  local state=${NIX_STATE_DIR:-/nix/var/nix}
  if [ "$profile_user" = root ]; then
    if [ "$profile_name" = system ]; then
      printf '%s' "$state/profiles/system"
    else
      printf '%s' "$state/profiles/per-user/root/$profile_name"
    fi
  elif [ -d "$state/profiles/per-user/$profile_user" ]; then
    printf '%s' "$state/profiles/per-user/$profile_user/$profile_name"
  elif [ -n "${XDG_STATE_HOME:-}" ]; then
    printf '%s' "$XDG_STATE_HOME/nix/profiles/$profile_name"
  elif [ -n "${HOME:-}" ]; then
    printf '%s' "$HOME/.local/state/nix/profiles/$profile_name"
  else
    die "cannot find the profile directory of $profile_user (no HOME)"
  fi
}

# Run <dir>/deploy-rs-activate the way deploy-rs does: PROFILE=<dir>, cwd <dir>.
run_script() { # dir dry boot
  (cd "$1" && PROFILE=$1 DRY_ACTIVATE=$2 BOOT=$3 "$1/deploy-rs-activate")
}

# deploy-rs's deactivate: back one generation, delete the newest, re-activate in switch mode.
deactivate() { # profile
  log "de-activating $1"
  nix-env -p "$1" --rollback || return 1
  local last
  last=$(nix-env -p "$1" --list-generations | tail -n 1 | awk '{print $1}')
  [ -n "$last" ] && nix-env -p "$1" --delete-generations "$last"
  (cd "$1" && env -u DRY_ACTIVATE -u BOOT PROFILE="$1" "$1/deploy-rs-activate")
}

canary() { # closure temp_path
  local base=${1#/nix/store/}
  printf '%s/deploy-rs-canary-%s' "$2" "${base%%-*}"
}

case "$cmd" in
  activate)
    [ -n "$closure" ] || die "activate: expected the closure"
    [ -n "$temp_path" ] || die "activate: --temp-path is required"
    [ -n "$confirm_timeout" ] || die "activate: --confirm-timeout is required"
    number confirm-timeout "$confirm_timeout"
    profile=$(resolve_profile) || exit 1
    if [ "$dry" = 1 ]; then
      # deploy-rs ignores the dry-activation's exit code.
      run_script "$closure" 1 0 || log "the dry activation script exited with $?"
      log "dry activation done"
      exit 0
    fi
    mkdir -p "$(dirname "$profile")"
    if ! nix-env -p "$profile" --set "$closure"; then
      [ "$auto" = 1 ] && deactivate "$profile"
      die "setting $profile failed"
    fi
    if ! run_script "$profile" 0 "$boot"; then
      [ "$auto" = 1 ] && deactivate "$profile"
      die "the activation script failed"
    fi
    log "activation succeeded"
    if [ "$magic" = 1 ] && [ "$boot" = 0 ]; then
      c=$(canary "$closure" "$temp_path")
      mkdir -p "$temp_path" && : > "$c" || { deactivate "$profile"; die "cannot create $c"; }
      log "waiting up to $confirm_timeout s for confirmation (removal of $c)"
      end=$(( $(date +%s) + confirm_timeout ))
      while [ -e "$c" ]; do
        if [ "$(date +%s)" -ge "$end" ]; then
          rm -f "$c"
          deactivate "$profile"
          die "no confirmation within $confirm_timeout s; rolled back"
        fi
        sleep 0.2
      done
      log "deployment confirmed"
    fi
    ;;
  wait)
    [ -n "$closure" ] || die "wait: expected the closure"
    [ -n "$temp_path" ] || die "wait: --temp-path is required"
    number activation-timeout "$activation_timeout"
    c=$(canary "$closure" "$temp_path")
    end=$(( $(date +%s) + activation_timeout ))
    until [ -e "$c" ]; do
      [ "$(date +%s)" -lt "$end" ] || die "timeout elapsed for confirmation"
      sleep 0.2
    done
    log "found canary file, done waiting"
    ;;
  revoke)
    profile=$(resolve_profile) || exit 1
    deactivate "$profile" || die "revoking $profile failed"
    ;;
  *) die "expected a subcommand: activate, wait or revoke" ;;
esac
