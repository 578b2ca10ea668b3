//! The keys phase: the node's secrets are read here before anything is contacted (a failing
//! `keyCommand` stops the node with nothing changed), then written on the target through the
//! agent's `put-key`, as root, each on the agent's stdin only — pre-activation keys before the
//! first activation, post-activation keys after the last one (a failure there rolls the node back).

use super::activate::agent_for;
use super::NodeCx;
use crate::events::{Phase, State};
use crate::exec::Runner;
use crate::keys::{Key, UploadAt};
use crate::plan::Deployment;
use crate::secret::Secret;
use crate::ssh::{self, Elevation};
use rollout_protocol::command::{Command, KeyArgs};

/// The node's keys with their content, by when they are uploaded.
#[derive(Default)]
pub struct NodeKeys {
    pub pre: Vec<(Key, Secret)>,
    pub post: Vec<(Key, Secret)>,
}

/// Read every key of the node (`keys` is a node-level setting: every profile has the same).
pub fn read(runner: &Runner, deps: &[&Deployment]) -> Result<NodeKeys, String> {
    let mut out = NodeKeys::default();
    let Some(d) = deps.first() else { return Ok(out) };
    for o in &d.settings.keys {
        let key = Key::from_object(o)?;
        let content = key.content(runner)?;
        match key.upload_at {
            UploadAt::PreActivation => out.pre.push((key, content)),
            UploadAt::PostActivation => out.post.push((key, content)),
        }
    }
    Ok(out)
}

/// Write `keys` on the node's host; the first failure is the error.
pub fn upload(cx: &NodeCx, deps: &[&Deployment], keys: &[(Key, Secret)]) -> Result<(), String> {
    let Some(d) = deps.first() else { return Ok(()) };
    if keys.is_empty() {
        return Ok(());
    }
    let host = &cx.hosts[cx.host_of(d)];
    // Keys belong to any user: the agent that writes them runs as root.
    let elevation = if d.settings.ssh_user == "root" {
        None
    } else {
        Some(
            Elevation::from_setting(&d.settings.sudo, "root", d.settings.interactive_sudo)
                .map_err(|e| format!("keys: {e}"))?,
        )
    };
    let password = cx.shared.passwords.get(&d.settings.hostname).map(|p| &**p);
    let password = Elevation::password_line(elevation.as_ref(), password).map(Secret::new);
    let agent_bin = agent_for(cx.shared, d);
    cx.rep.phase(
        Phase::Keys,
        State::Started,
        Some(format!("{} key(s) to {}", keys.len(), host.name())),
    );
    for (key, content) in keys {
        let argv = host.run(&ssh::agent_command(elevation.as_ref(), &agent_bin, &put_key_args(key)));
        let stdin = Secret::new(format!("{}{}", password.as_deref().unwrap_or(""), &**content));
        let r = cx.runner.stream(&argv, Some(&stdin), &|l| cx.rep.log(l));
        let failed = match r {
            Ok((st, _)) if st.success() => None,
            Ok((st, err)) => Some(format!("{st}: {}", err.trim().lines().last().unwrap_or(""))),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            cx.rep.phase(Phase::Keys, State::Failed, None);
            return Err(format!(
                "uploading key `{}` to {} failed ({why})",
                key.attr,
                host.name()
            ));
        }
    }
    cx.rep.phase(Phase::Keys, State::Succeeded, None);
    Ok(())
}

/// The agent's `put-key` arguments for `key`: where it goes and how, never its content.
fn put_key_args(key: &Key) -> Vec<String> {
    Command::PutKey(KeyArgs {
        dest_dir: key.dest_dir.clone().into(),
        name: key.name.clone(),
        user: key.user.clone(),
        group: key.group.clone(),
        permissions: key.permissions,
    })
    .to_args()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_put_key_command_line_never_carries_the_content() {
        let o = json!({"$name": "db", "text": "hunter2-s3cret", "user": "postgres", "permissions": "0640"});
        let key = Key::from_object(&crate::schema::object_of(o)).unwrap();
        let words = ssh::agent_command(None, "/nix/store/a/bin/rollout-agent", &put_key_args(&key)).join(" ");
        assert!(!words.contains("hunter2"), "{words}");
        assert!(
            words.contains("put-key --dest-dir /run/keys --name db --user postgres --group root --permissions 0640"),
            "{words}"
        );
    }
}
