//! Deploy ids and other random names: the one generator both sides use.

use std::io::Read;

/// `n` random bytes from the kernel as hex; without /dev/urandom, time and pid (still unique per
/// run on one machine, and every user of an id creates it exclusively anyway).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seed = format!("{t}-{}", std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed.as_bytes().get(i % seed.len()).copied().unwrap_or(0) ^ (t >> (i % 16 * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh deploy id (`d` + 24 hex digits): unique per deploy and profile, so no earlier deploy's
/// leftovers can confirm this one. Matches the agent's id grammar ([`crate::command`]).
pub fn new_deploy_id() -> String {
    format!("d{}", random_hex(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_valid() {
        let (a, b) = (new_deploy_id(), new_deploy_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(crate::command::parse(&["status".into(), "--id".into(), a]).is_ok());
        assert_eq!(random_hex(6).len(), 12);
    }
}
