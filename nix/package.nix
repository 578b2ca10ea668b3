# The rollout package: the `rollout` CLI (also installed as `deploy`, so `nix run` and scripts
# written for deploy-rs keep working) and `rollout-agent`, which runs on the targets.
{ rustPlatform }:

let
  root = ../.;
  rootStr = toString root;
  # Only what cargo needs: no target/, .git, docs or result links, so a non-flake build
  # (default.nix) does not copy build artefacts into the store.
  src = builtins.path {
    name = "rollout-source";
    path = root;
    filter = path: type:
      let rel = builtins.substring (builtins.stringLength rootStr + 1) (-1) (toString path); in
      rel == "Cargo.toml"
      || rel == "Cargo.lock"
      || rel == "crates"
      || (builtins.substring 0 7 rel == "crates/" && builtins.baseNameOf rel != "target");
  };
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "rollout";
  version = cargoToml.workspace.package.version;
  inherit src;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--workspace" "--bins" ];
  # The test suites need nix, ssh and a writable store; they run in CI, not in the build sandbox.
  doCheck = false;
  postInstall = ''
    ln -s rollout $out/bin/deploy
  '';
  meta = {
    description = "Deploy Nix profiles to a fleet over SSH (drop-in successor of deploy-rs)";
    mainProgram = "rollout";
  };
}
