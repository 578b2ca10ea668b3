//! The `-i` question: which answers go ahead, which are asked again, which cancel.
//!
//! deploy-rs (through the `yn` crate) goes ahead on `y`, `yes` or any answer containing one of
//! its yes-words (`yeah`, `yep`, `aye`, `true`, `1` …), asks once more on a "somewhat yes" and
//! cancels otherwise. rollout goes ahead on the same words given as the whole answer, asks once
//! more when a yes-word only appears inside a longer answer (`no wait, yes`), and cancels on
//! anything else, an empty line and end of input included.

use std::io::{BufRead, Write};

/// Words that mean yes on their own (deploy-rs's list, from `yn`).
const YES: &[&str] = &[
    "y",
    "yes",
    "true",
    "1",
    "yeah",
    "ya",
    "ye",
    "affirmative",
    "10-4",
    "aye",
    "yea",
    "yep",
];

/// How an answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    /// A yes-word inside a longer answer: worth asking again.
    Unclear,
    No,
}

/// Letters, digits, `-` and spaces only, lower case (so `Yes!` and ` YES ` are `yes`).
fn normalise(line: &str) -> String {
    line.chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

pub fn classify(line: &str) -> Answer {
    let n = normalise(line);
    let words: Vec<&str> = n.split_whitespace().collect();
    if let [one] = words.as_slice() {
        if YES.contains(one) {
            return Answer::Yes;
        }
    }
    if words.iter().any(|w| YES.contains(w)) {
        Answer::Unclear
    } else {
        Answer::No
    }
}

/// Asks on `out`, reads answers from `input`; true to go ahead.
pub fn ask(input: &mut impl BufRead, out: &mut impl Write) -> bool {
    let mut read = |prompt: &str| {
        let _ = write!(out, "{prompt}");
        let _ = out.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(n) if n > 0 => classify(&line),
            _ => Answer::No,
        }
    };
    match read("Are you sure you want to deploy these profiles? [y/N] ") {
        Answer::Yes => true,
        Answer::Unclear => read("That was unclear; please answer `yes` to deploy or `no` to cancel: ") == Answer::Yes,
        Answer::No => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_rs_yes_words_go_ahead_alone_and_are_asked_again_inside_a_sentence() {
        for yes in [
            "y",
            "Y",
            "yes",
            "YES!",
            " yeah\n",
            "yep",
            "aye",
            "true",
            "1",
            "10-4",
            "affirmative",
            "yea",
        ] {
            assert_eq!(classify(yes), Answer::Yes, "{yes:?}");
        }
        for unclear in ["yes please", "no wait, yes", "y y"] {
            assert_eq!(classify(unclear), Answer::Unclear, "{unclear:?}");
        }
        for no in ["", "\n", "n", "no", "maybe", "yahoo", "nope", "0", "sure?"] {
            assert_eq!(classify(no), Answer::No, "{no:?}");
        }
    }

    fn run(input: &str) -> (bool, String) {
        let mut out = Vec::new();
        let ok = ask(&mut input.as_bytes(), &mut out);
        (ok, String::from_utf8(out).unwrap())
    }

    #[test]
    fn an_unclear_answer_is_asked_once_more() {
        assert!(run("yes please\nyes\n").0);
        let (ok, out) = run("yes please\nyes please\n");
        assert!(!ok);
        assert!(out.contains("That was unclear"), "{out}");
        assert!(!run("yes please\n").0, "end of input cancels");
        assert!(!run("").0);
        assert!(run("aye\n").0);
    }
}
