# Adds `rollout` and, for flakes that used deploy-rs's overlay, `deploy-rs = { deploy-rs; lib; }`
# with the same shape (deploy-rs.deploy-rs is the package, deploy-rs.lib the library).
final: prev: {
  rollout = final.callPackage ./package.nix { };
  deploy-rs = {
    deploy-rs = final.rollout;
    lib = import ./lib.nix { pkgs = final; rollout = final.rollout; };
  };
}
