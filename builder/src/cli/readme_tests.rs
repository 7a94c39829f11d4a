//! The README's usage lines against the clap definition `--help` prints:
//! the `habuild --help` block is the help itself (`HABUILD_BLESS=1`
//! rewrites it), every `habuild ...` command line the README shows names
//! a real subcommand and real options, and every subcommand is in it.

use std::collections::BTreeSet;

use super::shell::command;
use crate::test_support::repo_root;

const BEGIN: &str =
    "<!-- habuild --help: generated, see builder/src/cli/readme_tests.rs -->\n```text\n";
const END: &str = "```\n<!-- end of habuild --help -->";

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("reading README.md")
}

#[test]
fn the_readme_help_block_is_the_help() {
    let text = readme();
    let help = command().render_help().to_string();
    let help = help.trim_end().to_string() + "\n";
    let start = text
        .find(BEGIN)
        .expect("README.md has the habuild --help block")
        + BEGIN.len();
    let end = start + text[start..].find(END).expect("the block ends");
    if std::env::var_os("HABUILD_BLESS").is_some() {
        let blessed = format!("{}{help}{}", &text[..start], &text[end..]);
        std::fs::write(repo_root().join("README.md"), blessed).expect("writing README.md");
        return;
    }
    pretty_assertions::assert_eq!(
        &text[start..end],
        help.as_str(),
        "README.md's `habuild --help` block differs from --help: HABUILD_BLESS=1 cargo test -p habuild --lib readme"
    );
}

/// The command lines the README shows: indented code lines that start
/// with `habuild `.
fn usage_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("    habuild "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Checks one README line; returns what is wrong with it.
fn check_line(line: &str, root: &clap::Command) -> Vec<String> {
    let mut problems = Vec::new();
    // A comment ends the command.
    let line = line.split(" #").next().unwrap_or(line);
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut cmd = root;
    let mut path = vec!["habuild"];
    let mut i = 0;
    while let Some(w) = words.get(i) {
        match cmd.find_subcommand(w) {
            Some(sub) => {
                cmd = sub;
                path.push(w);
                i += 1;
            }
            None => break,
        }
    }
    if path.len() == 1 {
        problems.push(format!("{line:?}: names no subcommand"));
        return problems;
    }
    let known: BTreeSet<String> = cmd
        .get_arguments()
        .chain(root.get_arguments())
        .flat_map(|a| {
            a.get_long_and_visible_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(|l| format!("--{l}"))
                .chain(a.get_short().map(|s| format!("-{s}")))
        })
        .chain(["--help".to_string(), "-h".to_string()])
        .collect();
    for w in &words[i..] {
        // `[--manifest F]`, `--out=DIR`, `-v`.
        let w = w.trim_start_matches('[').trim_end_matches(']');
        let opt = w.split('=').next().unwrap_or(w);
        if opt.starts_with('-') && opt.len() > 1 && !known.contains(opt) {
            problems.push(format!(
                "{line:?}: `{}` has no option {opt}",
                path.join(" ")
            ));
        }
    }
    problems
}

#[test]
fn readme_usage_lines_name_real_subcommands_and_options() {
    let root = command();
    let lines = usage_lines(&readme());
    assert!(lines.len() > 20, "too few usage lines found: {lines:?}");
    let problems: Vec<String> = lines.iter().flat_map(|l| check_line(l, &root)).collect();
    assert!(
        problems.is_empty(),
        "README.md drifted from --help:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_subcommand_is_in_the_readme() {
    let text = readme();
    let missing: Vec<String> = command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| format!("habuild {}", s.get_name()))
        .filter(|s| !text.contains(s.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in README.md: {missing:?}");
}

#[test]
fn the_line_checker_catches_drift() {
    let root = command();
    assert!(check_line("habuild image --board rpi4 --json", &root).is_empty());
    assert!(check_line("habuild secrets init [--manifest F] [--force]", &root).is_empty());
    assert_eq!(check_line("habuild image --bord rpi4", &root).len(), 1);
    assert_eq!(
        check_line("habuild verify x.img --json-report r.json", &root).len(),
        1
    );
    assert_eq!(check_line("habuild imagine --all", &root).len(), 1);
}
