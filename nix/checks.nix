# Cheap checks of nix/lib.nix, used as the flake's `checks.<system>`. They need only
# writeTextFile, runCommand and what lib.nix itself uses, and a stand-in agent instead of the
# real package, so `nix flake check` stays quick. (nix/tests/stub-pkgs.nix can drive them too.)
{ pkgs }:

let
  agent = pkgs.writeTextFile {
    name = "rollout-agent-standin";
    executable = true;
    destination = "/bin/rollout-agent";
    text = "#!${pkgs.runtimeShell}\necho standin\n";
  };
  lib = import ./lib.nix { inherit pkgs; rollout = agent; };

  base = pkgs.writeTextFile { name = "rollout-check-base"; text = "base\n"; destination = "/share/base"; };
  profile = (lib.activate.custom // { boot = "echo boot > \"$MARK\""; }) base ''echo "switch $PWD" > "$MARK"'';

  example = {
    sshUser = "deploy";
    magicRollback = true;
    nodes.example = {
      hostname = "example.invalid";
      profilesOrder = [ "app" ];
      profiles.app = { path = profile; user = "root"; confirmTimeout = 30; };
      profiles.other = { path = lib.activate.noop base; sshOpts = [ "-p" "2222" ]; };
    };
  };
  checks = lib.deployChecks example;
in
{
  lib-activate = pkgs.runCommand "rollout-check-lib-activate" { inherit profile; } ''
    cd "$profile"
    MARK="$(mktemp)"; export MARK
    PROFILE="$profile" "$profile/deploy-rs-activate"
    grep -q "^switch $profile\$" "$MARK"
    BOOT=1 PROFILE="$profile" "$profile/deploy-rs-activate"
    grep -q '^boot$' "$MARK"
    DRY_ACTIVATE=1 PROFILE="$profile" "$profile/deploy-rs-activate" | grep -q -- '-activate$'
    test -x "$profile/rollout-agent"
    test "$("$profile/rollout-agent")" = standin
    test -f "$profile/share/base"
    echo ok > "$out"
  '';
  lib-deploy-schema = checks.deploy-schema;
  lib-deploy-activate = checks.deploy-activate;
}
