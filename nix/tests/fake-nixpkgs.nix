# A fake `nixpkgs` flake input for evaluating flake.nix offline: legacyPackages.<system> is
# stub-pkgs plus the few attributes flake.nix and nix/package.nix use. The fake
# rustPlatform.buildRustPackage keeps its arguments in `rustArgs` and builds a package with
# stand-in bin/rollout and bin/rollout-agent scripts.
{ salt ? "" }:

let
  systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
  pkgsFor = system:
    let
      stub = import ./stub-pkgs.nix { inherit salt system; };
      self = stub // {
        callPackage = f: overrides:
          let fn = if builtins.isFunction f then f else import f; in
          fn (builtins.intersectAttrs (builtins.functionArgs fn) self // overrides);
        rustPlatform.buildRustPackage = args:
          stub.mk "${args.pname}-${args.version}" ''
            set -e
            mkdir -p "$out/bin"
            printf '#!/bin/sh\necho "rollout stand-in: $*"\n' > "$out/bin/rollout"
            printf '#!/bin/sh\necho "rollout-agent stand-in: $*"\n' > "$out/bin/rollout-agent"
            chmod +x "$out/bin/rollout" "$out/bin/rollout-agent"
            ${args.postInstall or ""}
          '' { } // { rustArgs = args; };
        mkShell = args: { shellArgs = args; };
        clippy = "clippy"; rustfmt = "rustfmt"; rust-analyzer = "rust-analyzer";
        nix = "nix"; openssh = "openssh";
      };
    in
    self;
in
{
  legacyPackages = builtins.listToAttrs (map (s: { name = s; value = pkgsFor s; }) systems);
}
