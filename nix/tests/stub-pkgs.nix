# A minimal stand-in for nixpkgs, enough to build and run what nix/lib.nix produces without a
# nixpkgs checkout (none is available offline). Every derivation is a /bin/sh script; `salt`
# goes into each one so that every test gets fresh store paths.
{ salt ? "", system ? builtins.currentSystem }:

let
  mk = name: script: env:
    builtins.derivation ({
      inherit name system salt;
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    } // env);

  pkgs = {
    inherit system;
    # lib.nix's scripts use `set -o pipefail`, which dash (Debian's /bin/sh) lacks.
    runtimeShell = "/bin/bash";

    writeTextFile = { name, text, executable ? false, destination ? "", ... }:
      mk name ''
        set -e
        target="$out${destination}"
        mkdir -p "$(dirname "$target")"
        printf '%s' "$text" > "$target"
        ${if executable then ''chmod +x "$target"'' else ""}
      '' { inherit text; };

    writeScript = name: text: pkgs.writeTextFile { inherit name text; executable = true; };

    # Like nixpkgs: `env` becomes the environment, the command runs with $out set.
    runCommand = name: env: command: mk name ("set -e\n" + command) env;

    # Merge the trees of all `paths` into $out as symlinks (later paths win on a clash).
    buildEnv = { name, paths, ... }:
      mk name ''
        set -e
        mkdir -p "$out"
        for p in $paths; do
          cp -rs --remove-destination "$p"/. "$out"/
          chmod -R u+w "$out"
        done
      '' { inherit paths; };
  };
in
pkgs // {
  # Stand-in for the rollout package: bin/rollout-agent reports its arguments.
  stubRollout = mk "rollout-stub" ''
    set -e
    mkdir -p "$out/bin"
    printf '#!/bin/sh\necho "rollout-agent stub: $*"\n' > "$out/bin/rollout-agent"
    chmod +x "$out/bin/rollout-agent"
  '' { };

  # A derivation whose build fails: proves that something never gets built.
  unbuildable = name: mk name "echo 'this derivation must not be built' >&2; exit 1" { };

  inherit mk;
}
