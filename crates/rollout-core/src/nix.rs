//! Argv builders for every `nix`, `nix-build`, `nix-instantiate` and `nix-store` call rollout makes.

use crate::cmd::{quote, Argv};
use crate::validate::{HostName, UserName};

/// What we know about the local Nix: decided once per run, then used by every builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixContext {
    /// `(major, minor)` of the local Nix (Lix reports a Nix-compatible version too).
    pub version: (u32, u32),
    /// Arguments after `--` on the command line: passed to check, eval and build calls.
    pub extra_args: Vec<String>,
}

impl Default for NixContext {
    fn default() -> Self {
        NixContext {
            version: (2, 18),
            extra_args: Vec::new(),
        }
    }
}

/// `nix` with the experimental features rollout needs, whatever the user's nix.conf says.
pub fn nix() -> Argv {
    Argv::new("nix").args(["--extra-experimental-features", "nix-command flakes"])
}

pub fn version() -> Argv {
    Argv::new("nix").arg("--version")
}

/// Parses `nix (Nix) 2.8.0`, `nix (Lix, like Nix) 2.91.1`, `nix (Nix) 2.24.0pre2024…`.
pub fn parse_version(out: &str) -> Option<(u32, u32)> {
    let last = out.split_whitespace().last()?;
    let mut it = last.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Succeeds only when this Nix can evaluate flakes (the probe deploy-rs uses).
pub fn flake_probe() -> Argv {
    nix().args(["eval", "--expr", "builtins.getFlake"])
}

impl NixContext {
    pub fn flake_check(&self, flake: &str) -> Argv {
        nix()
            .args(["flake", "check", flake])
            .args(self.extra_args.iter().cloned())
    }

    /// Non-flake checks: build `checks.<currentSystem>` of the file's value if it has any.
    pub fn file_check(&self, file: &str) -> Argv {
        let expr = format!(
            "let r = import {}; x = if builtins.isFunction r then r {{}} else r; in \
             if x ? checks && x.checks ? ${{builtins.currentSystem}} then x.checks.${{builtins.currentSystem}} else {{}}",
            crate::evalexpr::nix_path_expr(file)
        );
        Argv::new("nix-build")
            .args(["--no-out-link", "-E", &expr])
            .args(self.extra_args.iter().cloned())
    }

    /// One evaluation of a flake's `deploy` output through an `--apply` lambda. Without the
    /// evaluation cache: an `--apply` result is never cached anyway, and several evaluators of one
    /// flake at once race on its SQLite file (Nix 2.8 then reports the `deploy` attribute as
    /// "unexpectedly missing").
    pub fn eval_flake(&self, flake: &str, apply: &str) -> Argv {
        nix()
            .args(["eval", "--option", "eval-cache", "false", "--json"])
            .args([&format!("{flake}#deploy"), "--apply", apply])
            .args(self.extra_args.iter().cloned())
    }

    pub fn eval_file(&self, expr: &str) -> Argv {
        Argv::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--read-write-mode", "-E", expr])
            .args(self.extra_args.iter().cloned())
    }

    /// One local build of every listed derivation's outputs (or store path). Nix 2.13 added
    /// `DRV^*` for "the outputs of DRV"; from 2.14 on a bare `.drv` means the file itself, so
    /// older Nix gets the bare path and newer Nix the explicit form.
    pub fn build_outputs(&self, paths: &[String]) -> Argv {
        let explicit = self.version >= (2, 13);
        nix()
            .args(["build", "--no-link"])
            .args(paths.iter().map(|p| {
                if explicit && p.ends_with(".drv") {
                    format!("{p}^*")
                } else {
                    p.clone()
                }
            }))
            .args(self.extra_args.iter().cloned())
    }

    /// `nix flake metadata --json FLAKE`: the flake's revision, for the targets' deploy records.
    pub fn flake_metadata(&self, flake: &str) -> Argv {
        nix()
            .args(["flake", "metadata", "--json", flake])
            .args(self.extra_args.iter().cloned())
    }

    /// Non-flake local build of derivations: `nix-build DRV…` realises them (in every Nix).
    pub fn build_drvs_file(&self, drvs: &[String]) -> Argv {
        Argv::new("nix-build")
            .arg("--no-out-link")
            .args(drvs.iter().cloned())
            .args(self.extra_args.iter().cloned())
    }

    /// Build on the target: the derivation closure goes to the target's store over `ssh-ng` and
    /// is realised there; nothing is built locally.
    pub fn build_remote(&self, store_uri: &str, installable: &[String], ssh_opts: &str) -> Argv {
        nix()
            .args(["build", "--no-link", "--eval-store", "auto", "--store", store_uri])
            .args(installable.iter().cloned())
            .args(self.extra_args.iter().cloned())
            .env("NIX_SSHOPTS", ssh_opts)
    }

    /// Join ssh options for `NIX_SSHOPTS`. Nix before 2.26 splits that variable on whitespace
    /// only, so an option that contains a space cannot be passed there; newer Nix splits it the
    /// way a shell would, so quoting is safe.
    pub fn sshopts_env(&self, opts: &[String]) -> Result<String, String> {
        if self.version >= (2, 26) {
            return Ok(opts.iter().map(|o| quote(o)).collect::<Vec<_>>().join(" "));
        }
        if let Some(bad) = opts.iter().find(|o| o.chars().any(char::is_whitespace)) {
            return Err(format!(
                "ssh option `{bad}` contains whitespace, which Nix {}.{} cannot pass through NIX_SSHOPTS \
                 (Nix 2.26 or newer can); put it in ~/.ssh/config instead",
                self.version.0, self.version.1
            ));
        }
        Ok(opts.join(" "))
    }
}

/// `nix copy` of closures to a target over the legacy `ssh://` store. The log is Nix's JSON
/// log, so that rollout can count the paths and bytes copied (see `deploy::copy`).
pub fn copy_to(store_uri: &str, paths: &[String], substitute: bool, check_sigs: bool, ssh_opts: &str) -> Argv {
    let mut a = nix().args(["copy", "--log-format", "internal-json"]);
    if substitute {
        a = a.arg("--substitute-on-destination");
    }
    if !check_sigs {
        a = a.arg("--no-check-sigs");
    }
    a.arg("--to")
        .arg(store_uri)
        .args(paths.iter().cloned())
        .env("NIX_SSHOPTS", ssh_opts)
}

/// `nix store sign -r`: sign `paths` and their closures with the deployer's secret key (deploy-rs's
/// `nix sign-paths -r -k $LOCAL_KEY`), so a target whose ssh user is not a trusted Nix user, and
/// that requires signatures, accepts them.
pub fn sign_closures(key_file: &str, paths: &[String]) -> Argv {
    nix()
        .args(["store", "sign", "--recursive", "--key-file", key_file])
        .args(paths.iter().cloned())
}

/// NAR sizes of the closures of `paths` (JSON: a list in older Nix, an object keyed by path in
/// newer Nix; `deploy::copy` reads both).
pub fn path_info_sizes(paths: &[String]) -> Argv {
    nix().args(["path-info", "--json", "-r"]).args(paths.iter().cloned())
}

/// Add a local directory (the agent package) to the local store.
pub fn store_add(dir: &str) -> Argv {
    Argv::new("nix-store").args(["--add", dir])
}

/// Make store paths valid (substituted if they are not here): profiles whose `path` is a plain
/// store path rather than a derivation, in non-flake mode.
pub fn realise(paths: &[String]) -> Argv {
    Argv::new("nix-store").arg("--realise").args(paths.iter().cloned())
}

/// A GC root for `--keep-result`, one per node and profile.
pub fn add_root(path: &str, root: &str) -> Argv {
    Argv::new("nix-store").args(["--realise", path, "--add-root", root])
}

/// The two SSH store types rollout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreScheme {
    /// `ssh://`: the legacy store, used for copies.
    Ssh,
    /// `ssh-ng://`: used for remote builds.
    SshNg,
}

/// `ssh://user@host` or `ssh-ng://user@host`, from validated parts only: neither a [`UserName`]
/// nor a [`HostName`] can hold `?`, `#`, `/`, `@` or (outside an IPv6 zone id) `%`, so nothing in
/// them can become a store parameter such as `remote-program`.
pub fn store_uri(scheme: StoreScheme, user: &UserName, host: &HostName) -> String {
    let scheme = match scheme {
        StoreScheme::Ssh => "ssh",
        StoreScheme::SshNg => "ssh-ng",
    };
    format!("{scheme}://{user}@{host}")
}

/// The installable of one profile's `path` inside a flake's `deploy` output.
pub fn profile_installable(flake: &str, node: &str, profile: &str) -> String {
    format!("{flake}#{}", profile_attr(node, profile))
}

/// `deploy.nodes."n".profiles."p".path`, quoting names so that dots in them are kept.
pub fn profile_attr(node: &str, profile: &str) -> String {
    format!("deploy.nodes.{}.profiles.{}.path", attr_name(node), attr_name(profile))
}

fn attr_name(name: &str) -> String {
    crate::target::quote_attr(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nix_and_lix_versions() {
        assert_eq!(parse_version("nix (Nix) 2.8.0\n"), Some((2, 8)));
        assert_eq!(parse_version("nix (Lix, like Nix) 2.91.1"), Some((2, 91)));
        assert_eq!(parse_version("nix (Nix) 2.24.0pre20240101_dirty"), Some((2, 24)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn eval_passes_apply_lambda_and_extra_args() {
        let ctx = NixContext {
            version: (2, 8),
            extra_args: vec!["--impure".into()],
        };
        let a = ctx.eval_flake("./f", "d: d");
        assert_eq!(
            a.words(),
            vec![
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "eval",
                "--option",
                "eval-cache",
                "false",
                "--json",
                "./f#deploy",
                "--apply",
                "d: d",
                "--impure"
            ]
        );
    }

    #[test]
    fn builds_name_the_evaluated_derivations_in_the_syntax_of_the_nix_version() {
        let paths = ["/nix/store/a-sys.drv".to_string(), "/nix/store/b-app".to_string()];
        let old = NixContext {
            version: (2, 8),
            extra_args: vec!["--builders".into(), "ssh://b".into()],
        };
        assert_eq!(
            &old.build_outputs(&paths).args[2..],
            &[
                "build",
                "--no-link",
                "/nix/store/a-sys.drv",
                "/nix/store/b-app",
                "--builders",
                "ssh://b"
            ]
        );
        let new = NixContext {
            version: (2, 18),
            extra_args: Vec::new(),
        };
        assert_eq!(
            &new.build_outputs(&paths).args[2..],
            &["build", "--no-link", "/nix/store/a-sys.drv^*", "/nix/store/b-app"]
        );
        let f = old.build_drvs_file(&paths[..1]);
        assert_eq!(f.program, "nix-build");
        assert_eq!(
            f.args,
            ["--no-out-link", "/nix/store/a-sys.drv", "--builders", "ssh://b"]
        );
    }

    #[test]
    fn copy_flags_follow_fast_connection_and_checksigs() {
        let a = copy_to("ssh://d@h", &["/nix/store/a".into()], true, false, "-p 22");
        assert!(a.args.contains(&"--substitute-on-destination".to_string()));
        assert!(a.args.contains(&"--no-check-sigs".to_string()));
        assert_eq!(a.env, vec![("NIX_SSHOPTS".to_string(), "-p 22".to_string())]);
        let b = copy_to("ssh://d@h", &["/nix/store/a".into()], false, true, "");
        assert!(!b
            .args
            .iter()
            .any(|x| x.starts_with("--substitute") || x == "--no-check-sigs"));
    }

    #[test]
    fn sshopts_with_spaces_are_refused_on_old_nix_and_quoted_on_new() {
        let opts = vec!["-o".to_string(), "ProxyCommand=nc %h %p".to_string()];
        let old = NixContext {
            version: (2, 8),
            ..Default::default()
        };
        assert!(old.sshopts_env(&opts).unwrap_err().contains("ProxyCommand"));
        let new = NixContext {
            version: (2, 28),
            ..Default::default()
        };
        assert_eq!(new.sshopts_env(&opts).unwrap(), "-o 'ProxyCommand=nc %h %p'");
    }

    #[test]
    fn store_uris_are_built_from_validated_parts_only() {
        let u = UserName::parse("deploy").unwrap();
        let h = HostName::parse("host1").unwrap();
        assert_eq!(store_uri(StoreScheme::Ssh, &u, &h), "ssh://deploy@host1");
        assert_eq!(store_uri(StoreScheme::SshNg, &u, &h), "ssh-ng://deploy@host1");
        let v6 = HostName::parse("[fe80::1%eth0]").unwrap();
        assert_eq!(store_uri(StoreScheme::Ssh, &u, &v6), "ssh://deploy@fe80::1%eth0");
        // The known exploit and its relatives cannot even be turned into the parts of a URI.
        for hostile in [
            "host1?remote-program=touch%20/tmp/pwned%3Bnix-store",
            "host1#x",
            "host1/x?y",
            "evil@host1",
            "host1%3Fremote-program=x",
        ] {
            assert!(HostName::parse(hostile).is_err(), "{hostile}");
        }
        for hostile in [
            "x?remote-program=touch%20/tmp/pwned%3Bnix-store",
            "a@b",
            "a/b",
            "a#b",
            "a%3F",
        ] {
            assert!(UserName::parse(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn closures_are_signed_recursively_with_the_key_file() {
        let a = sign_closures("/k/secret", &["/nix/store/a-x".into(), "/nix/store/b-y".into()]);
        assert_eq!(
            a.to_string(),
            "nix --extra-experimental-features 'nix-command flakes' store sign --recursive --key-file /k/secret /nix/store/a-x /nix/store/b-y"
        );
    }
}
