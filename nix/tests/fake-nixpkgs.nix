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
        lib.optionalString = cond: text: if cond then text else "";
        stdenv = {
          buildPlatform.canExecute = platform: platform.system == system;
          hostPlatform = { inherit system; };
        };
        # Recognised by the fake buildRustPackage: its functions exist only when listed in
        # nativeBuildInputs, as with nixpkgs' setup hook.
        installShellFiles = "installShellFiles";
        rustPlatform.buildRustPackage = args:
          stub.mk "${args.pname}-${args.version}" ''
            set -e
            mkdir -p "$out/bin"
            # Stand-ins that answer the way the real binary does for what postInstall asks.
            cat > "$out/bin/rollout" <<'SH'
            #!/bin/sh
            case "$1" in
              completions) echo "# rollout completion for $2" ;;
              man) mkdir -p "$3"; for p in rollout rollout-deploy; do echo ".TH $p 1" > "$3/$p.1"; done ;;
              *) echo "rollout stand-in: $*" ;;
            esac
            SH
            sed -i 's/^ *//' "$out/bin/rollout"
            printf '#!/bin/sh\necho "rollout-agent stand-in: $*"\n' > "$out/bin/rollout-agent"
            chmod +x "$out/bin/rollout" "$out/bin/rollout-agent"
            ${if builtins.elem "installShellFiles" (args.nativeBuildInputs or [ ]) then ''
              installShellCompletion() {
                cmd=""
                while [ $# -gt 0 ]; do
                  case "$1" in
                    --cmd) cmd="$2"; shift 2 ;;
                    --bash) mkdir -p "$out/share/bash-completion/completions"; cat "$2" > "$out/share/bash-completion/completions/$cmd.bash"; shift 2 ;;
                    --zsh) mkdir -p "$out/share/zsh/site-functions"; cat "$2" > "$out/share/zsh/site-functions/_$cmd"; shift 2 ;;
                    --fish) mkdir -p "$out/share/fish/vendor_completions.d"; cat "$2" > "$out/share/fish/vendor_completions.d/$cmd.fish"; shift 2 ;;
                    *) echo "installShellCompletion: unexpected $1" >&2; return 1 ;;
                  esac
                done
              }
              installManPage() {
                mkdir -p "$out/share/man/man1"
                for p in "$@"; do cp "$p" "$out/share/man/man1/"; done
              }
            '' else ""}
            cd "$(mktemp -d)"
            ${args.postInstall or ""}
          '' { builder = "/bin/bash"; } // { rustArgs = args; };
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
