//! The one way habuild runs external tools: every command is logged, and a
//! failure carries the tail of the tool's stderr so the user sees why.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// How many trailing stderr lines go into an error message.
const STDERR_TAIL_LINES: usize = 20;

/// Runs external tools with logging and readable failures.
pub trait CommandExt {
    /// Runs the command to completion, inheriting stdout, capturing stderr.
    fn run_checked(&mut self) -> Result<()>;
    /// Runs the command and returns its stdout as UTF-8 (lossy).
    fn output_checked(&mut self) -> Result<String>;
    /// Like [`CommandExt::output_checked`], but the exit codes in `accepted`
    /// count as success too (e2fsck exits 1 when it corrected something).
    fn output_accepting(&mut self, accepted: &[i32]) -> Result<String>;
    /// A shell-like rendering of the command line, for logs and errors.
    fn display(&self) -> String;
}

impl CommandExt for Command {
    fn run_checked(&mut self) -> Result<()> {
        self.stdout(Stdio::null());
        run(self, &[]).map(|_| ())
    }

    fn output_checked(&mut self) -> Result<String> {
        self.output_accepting(&[])
    }

    fn output_accepting(&mut self, accepted: &[i32]) -> Result<String> {
        self.stdout(Stdio::piped());
        let out = run(self, accepted)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn display(&self) -> String {
        let mut parts = vec![quote(self.get_program())];
        parts.extend(self.get_args().map(quote));
        parts.join(" ")
    }
}

/// Runs a long command, handing each stderr line to `on_line` as it comes
/// (for progress), and keeping the tail for the error if it fails.
pub fn run_streaming(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let shown = cmd.display();
    log::debug!("running: {shown}");
    // No terminal input: the tool runs in a process group of its own.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = super::children::spawn(cmd).with_context(|| {
        format!("could not start `{shown}` (is the tool installed? try `habuild doctor`)")
    })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.with_context(|| format!("reading the output of `{shown}`"))?;
        log::debug!("  {line}");
        on_line(&line);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait();
    super::children::reaped(child.id());
    let status = status.with_context(|| format!("waiting for `{shown}`"))?;
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        bail!("`{shown}` failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(())
}

fn run(cmd: &mut Command, accepted: &[i32]) -> Result<Output> {
    let shown = cmd.display();
    log::debug!("running: {shown}");
    // As `Command::output` did (no stdin; stdout as the caller set it), in
    // a process group of its own (see `children`).
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    let child = super::children::spawn(cmd).with_context(|| {
        format!("could not start `{shown}` (is the tool installed? try `habuild doctor`)")
    })?;
    let pid = child.id();
    let out = child.wait_with_output();
    super::children::reaped(pid);
    let out = out.with_context(|| format!("waiting for `{shown}`"))?;
    let accepted = out.status.code().is_some_and(|c| accepted.contains(&c));
    if !out.status.success() && !accepted {
        // Some tools (e2fsck) say what went wrong on stdout.
        let mut tail = stderr_tail(&out.stderr, STDERR_TAIL_LINES);
        if tail.is_empty() {
            tail = stderr_tail(&out.stdout, STDERR_TAIL_LINES);
        }
        bail!(
            "`{shown}` failed ({}){}",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n{tail}")
            }
        );
    }
    Ok(out)
}

/// The last `lines` lines of a tool's stderr, trimmed.
pub fn stderr_tail(stderr: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_stderr_tail() {
        let err = Command::new("sh")
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .run_checked()
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("two"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn accepted_exit_codes_pass_and_stdout_explains_a_silent_failure() {
        let corrected = Command::new("sh")
            .args(["-c", "echo fixed; exit 1"])
            .output_accepting(&[1])
            .unwrap();
        assert_eq!(corrected, "fixed\n");
        let err = Command::new("sh")
            .args(["-c", "echo 'inode 12 is bad'; exit 4"])
            .output_accepting(&[1])
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("inode 12 is bad") && msg.contains("exit status: 4"),
            "{msg}"
        );
    }

    #[test]
    fn missing_tool_names_doctor() {
        let err = Command::new("habuild-no-such-tool")
            .run_checked()
            .unwrap_err();
        assert!(format!("{err:#}").contains("habuild doctor"));
    }

    #[test]
    fn display_quotes_spaces() {
        let mut c = Command::new("echo");
        c.args(["a b", "c"]);
        assert_eq!(c.display(), "echo 'a b' c");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(stderr_tail(b"a\nb\n\nc\n", 2), "b\nc");
    }
}
