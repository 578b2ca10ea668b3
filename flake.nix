{
  description = "rollout: deploy Nix profiles to a fleet over SSH (drop-in successor of deploy-rs)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: builtins.listToAttrs (map
        (system: { name = system; value = f system nixpkgs.legacyPackages.${system}; })
        systems);
    in
    {
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (system: pkgs:
        let rollout = pkgs.callPackage ./nix/package.nix { }; in
        {
          default = rollout;
          inherit rollout;
          # deploy-rs's attribute name, for `nix run …#deploy-rs` and `inputs.x.packages.<sys>.deploy-rs`.
          deploy-rs = rollout;
        });

      apps = forAllSystems (system: pkgs:
        let pkg = self.packages.${system}.default; in
        {
          default = { type = "app"; program = "${pkg}/bin/rollout"; };
          deploy-rs = { type = "app"; program = "${pkg}/bin/deploy"; };
        });

      # lib.<system>.{activate, setActivate, deployChecks}: the same interface as deploy-rs's.
      lib = forAllSystems (system: pkgs:
        import ./nix/lib.nix { inherit pkgs; rollout = self.packages.${system}.default; });

      # Cheap checks of the library: a tiny profile built and activated in every mode, and
      # deployChecks on an example `deploy`. They use a stand-in agent so that they do not
      # compile rollout (build `.#default` for that).
      checks = forAllSystems (system: pkgs: import ./nix/checks.nix { inherit pkgs; });

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${system}.default ];
          packages = [ pkgs.clippy pkgs.rustfmt pkgs.rust-analyzer pkgs.nix pkgs.openssh ];
        };
      });
    };
}
