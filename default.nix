# Non-flake entry point, with the flake's shape where it matters:
#
#   let rollout = import (fetchTarball "…/rollout/archive/<rev>.tar.gz") { }; in
#   rollout.lib.x86_64-linux.activate.nixos …   # as with deploy-rs through flake-compat
#   rollout.lib.activate.nixos …                 # the same, for pkgs' own system
#
# `pkgs` defaults to <nixpkgs>; the other systems' entries re-import `pkgs.path` lazily.
# `rollout` can be overridden (e.g. with a prebuilt package).
{ pkgs ? import <nixpkgs> { }
, rollout ? pkgs.callPackage ./nix/package.nix { }
}:

let
  systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
  system = pkgs.stdenv.hostPlatform.system or pkgs.system;
  forAllSystems = f: builtins.listToAttrs (map (s: { name = s; value = f s; }) systems);

  pkgsFor = s: if s == system then pkgs else import pkgs.path { system = s; };
  rolloutFor = s: if s == system then rollout else (pkgsFor s).callPackage ./nix/package.nix { };
  libFor = s: import ./nix/lib.nix { pkgs = pkgsFor s; rollout = rolloutFor s; };
  packagesFor = s: let r = rolloutFor s; in { default = r; rollout = r; deploy-rs = r; };
in
{
  inherit rollout;

  # lib.activate.* etc. for pkgs' system, and lib.<system>.* like the flake.
  lib = libFor system // forAllSystems libFor;

  packages = forAllSystems packagesFor;

  overlays.default = import ./nix/overlay.nix;

  checks = forAllSystems (s: import ./nix/checks.nix { pkgs = pkgsFor s; });
}
