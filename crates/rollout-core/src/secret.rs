//! A secret string (a sudo password): zeroed in memory when dropped, never shown by `Debug`.

use zeroize::Zeroizing;

/// A sudo password. Its memory is overwritten when the last copy is dropped, and its `Debug`
/// output is a fixed placeholder, so no `{:?}` of a structure that holds it can reveal it.
/// It dereferences to `str` only to be written to a child's stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let s = Secret::new("hunter2-pw".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Option<Secret>,
        }
        let shown = format!(
            "{:?} {:#?}",
            Holder {
                password: Some(s.clone())
            },
            Some(&s)
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(&*s, "hunter2-pw", "the value itself is intact");
    }
}
