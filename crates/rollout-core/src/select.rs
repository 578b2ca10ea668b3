//! Node selection for fleets: `--on` and `--exclude` with names, globs (`web-*`) and tags (`@db`).

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectError {
    #[error("invalid node selector `{0}`: expected a node name, a glob such as `web-*`, or a tag such as `@db`")]
    Invalid(String),
    #[error("no selected node matches --on {on}{exclude}; nodes in the plan: {nodes}")]
    Empty { on: String, exclude: String, nodes: String },
}

#[derive(Debug, Clone)]
enum Rule {
    Name(glob::Pattern),
    Tag(glob::Pattern),
}

impl Rule {
    fn parse(s: &str) -> Result<Rule, SelectError> {
        let (tag, pat) = match s.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if pat.is_empty() {
            return Err(SelectError::Invalid(s.to_string()));
        }
        let p = glob::Pattern::new(pat).map_err(|_| SelectError::Invalid(s.to_string()))?;
        Ok(if tag { Rule::Tag(p) } else { Rule::Name(p) })
    }

    fn matches(&self, name: &str, tags: &[String]) -> bool {
        match self {
            Rule::Name(p) => p.matches(name),
            Rule::Tag(p) => tags.iter().any(|t| p.matches(t)),
        }
    }
}

/// `--on` rules are OR-ed (none = every node); `--exclude` rules remove nodes afterwards.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    on: Vec<Rule>,
    exclude: Vec<Rule>,
    on_text: Vec<String>,
    exclude_text: Vec<String>,
}

fn split(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl NodeFilter {
    pub fn parse(on: &[String], exclude: &[String]) -> Result<NodeFilter, SelectError> {
        let on_text = split(on);
        let exclude_text = split(exclude);
        Ok(NodeFilter {
            on: on_text.iter().map(|s| Rule::parse(s)).collect::<Result<_, _>>()?,
            exclude: exclude_text.iter().map(|s| Rule::parse(s)).collect::<Result<_, _>>()?,
            on_text,
            exclude_text,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.on.is_empty() && self.exclude.is_empty()
    }

    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        (self.on.is_empty() || self.on.iter().any(|r| r.matches(name, tags)))
            && !self.exclude.iter().any(|r| r.matches(name, tags))
    }

    /// The error for a filter that left nothing.
    pub fn empty_error(&self, nodes: &[String]) -> SelectError {
        SelectError::Empty {
            on: if self.on_text.is_empty() {
                "(all)".into()
            } else {
                self.on_text.join(",")
            },
            exclude: if self.exclude_text.is_empty() {
                String::new()
            } else {
                format!(" --exclude {}", self.exclude_text.join(","))
            },
            nodes: nodes.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(on: &[&str], ex: &[&str]) -> NodeFilter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        NodeFilter::parse(&s(on), &s(ex)).unwrap()
    }

    #[test]
    fn names_globs_and_tags_select_nodes() {
        let web = vec!["web".to_string(), "eu".to_string()];
        assert!(f(&[], &[]).matches("a", &[]));
        assert!(f(&["a"], &[]).matches("a", &[]));
        assert!(!f(&["a"], &[]).matches("b", &[]));
        assert!(f(&["web-*"], &[]).matches("web-3", &[]));
        assert!(f(&["@web"], &[]).matches("x", &web));
        assert!(!f(&["@db"], &[]).matches("x", &web));
        assert!(f(&["@db,x"], &[]).matches("x", &web));
    }

    #[test]
    fn exclude_wins_over_on() {
        let web = vec!["web".to_string()];
        assert!(!f(&["@web"], &["x"]).matches("x", &web));
        assert!(!f(&[], &["@web"]).matches("x", &web));
        assert!(f(&[], &["@web"]).matches("y", &[]));
    }

    #[test]
    fn bad_selectors_are_errors() {
        assert!(NodeFilter::parse(&["@".into()], &[]).is_err());
        assert!(NodeFilter::parse(&["[".into()], &[]).is_err());
    }
}
