//! `habuild doctor`: is every host tool present and new enough?
//!
//! [`check_all`] probes the host (I/O); [`render_table`] and
//! [`check_required`] are pure and work on the resulting [`ToolStatus`]es.
//! [`require`] is what a build calls up front.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::tools::{self, format_min, Need, Probe, Tool, Version, TOOLS};

/// The one command that fixes a host.
pub const FIX_COMMAND: &str = "habuild doctor --install";

/// The outcome of probing one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    Missing,
    /// Present, but older than [`Tool::min_version`].
    TooOld,
    /// Present, a minimum version applies, and its version could not be read.
    UnknownVersion,
}

/// What [`check`] found for one tool.
#[derive(Debug, Clone)]
pub struct ToolStatus {
    pub tool: &'static Tool,
    /// Where it is (executable or file), if present.
    pub path: Option<PathBuf>,
    /// Its version, if it has one and it could be read.
    pub version: Option<Version>,
    pub state: State,
}

impl ToolStatus {
    pub fn is_ok(&self) -> bool {
        self.state == State::Ok
    }

    /// The state of a tool found at `path` (if any) with `version`: pure.
    pub fn new(tool: &'static Tool, path: Option<PathBuf>, version: Option<Version>) -> Self {
        let state = match (&path, tool.min_version, &version) {
            (None, _, _) => State::Missing,
            (Some(_), None, _) => State::Ok,
            (Some(_), Some(_), None) => State::UnknownVersion,
            (Some(_), Some(min), Some(v)) if v.at_least(min) => State::Ok,
            (Some(_), Some(_), Some(_)) => State::TooOld,
        };
        ToolStatus {
            tool,
            path,
            version,
            state,
        }
    }

    /// One line saying what is wrong and which package fixes it.
    fn problem(&self) -> String {
        let t = self.tool;
        let from = if t.backports {
            " (bookworm-backports on Debian 12)"
        } else {
            ""
        };
        let min = t.min_version.map(format_min).unwrap_or_default();
        match self.state {
            State::Ok => format!("{} is fine", t.name),
            State::Missing => format!("{} is missing: install package {}{from}", t.name, t.package),
            State::TooOld => format!(
                "{} {} is too old (needs >= {min}): install package {}{from}",
                t.name,
                self.version
                    .as_ref()
                    .map(Version::to_string)
                    .unwrap_or_default(),
                t.package
            ),
            State::UnknownVersion => format!(
                "{}: could not read its version (needs >= {min}): reinstall package {}{from}",
                t.name, t.package
            ),
        }
    }
}

/// Probes one tool: looks it up and reads its version.
pub fn check(tool: &'static Tool) -> ToolStatus {
    match tool.probe {
        Probe::File { candidates } => ToolStatus::new(tool, tools::find_file(candidates), None),
        Probe::Command {
            program,
            args,
            parse,
        } => {
            let path = tools::find_executable(program);
            let version = path
                .as_ref()
                .and_then(|p| match tools::version_output(p, args) {
                    Ok(text) => parse(&text),
                    Err(err) => {
                        log::warn!("{err:#}");
                        None
                    }
                });
            ToolStatus::new(tool, path, version)
        }
    }
}

/// Probes every tool of [`TOOLS`], in table order (in parallel: each probe
/// starts a process).
pub fn check_all() -> Vec<ToolStatus> {
    check_many(TOOLS.iter().collect())
}

fn check_many(list: Vec<&'static Tool>) -> Vec<ToolStatus> {
    std::thread::scope(|s| {
        let handles: Vec<_> = list.iter().map(|t| s.spawn(move || check(t))).collect();
        handles
            .into_iter()
            .zip(&list)
            .map(|(h, t)| {
                h.join().unwrap_or(ToolStatus {
                    tool: t,
                    path: None,
                    version: None,
                    state: State::UnknownVersion,
                })
            })
            .collect()
    })
}

/// Whether every tool `habuild image` needs is fine.
pub fn image_ready(statuses: &[ToolStatus]) -> bool {
    statuses
        .iter()
        .all(|s| s.is_ok() || s.tool.need != Need::Image)
}

/// The packages that fix every tool that is not fine, deduplicated.
pub fn packages_to_install(statuses: &[ToolStatus]) -> Vec<&'static str> {
    tools::packages_for(statuses.iter().filter(|s| !s.is_ok()).map(|s| s.tool))
}

/// A readable table of `statuses`, followed by what to do about problems.
pub fn render_table(statuses: &[ToolStatus]) -> String {
    let header = ["TOOL", "FOR", "STATUS", "VERSION", "PACKAGE", "NOTE"];
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            let t = s.tool;
            let status = match s.state {
                State::Ok => "ok",
                State::Missing => "MISSING",
                State::TooOld => "TOO OLD",
                State::UnknownVersion => "UNKNOWN",
            };
            let version = match (&s.version, &s.path) {
                (Some(v), _) => v.to_string(),
                (None, Some(_)) if matches!(t.probe, Probe::File { .. }) => "file".to_string(),
                (None, Some(_)) => "?".to_string(),
                (None, None) => "-".to_string(),
            };
            let package = if t.backports {
                format!("{} (backports)", t.package)
            } else {
                t.package.to_string()
            };
            let min = t.min_version.map(format_min);
            let note = match s.state {
                State::Ok => match t.probe {
                    Probe::File { .. } => s
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    Probe::Command { .. } => String::new(),
                },
                State::Missing => t.purpose.to_string(),
                State::TooOld | State::UnknownVersion => {
                    format!("needs >= {}", min.unwrap_or_default())
                }
            };
            [
                t.name.to_string(),
                t.need.to_string(),
                status.to_string(),
                version,
                package,
                note,
            ]
        })
        .collect();

    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }

    let bad: Vec<&ToolStatus> = statuses.iter().filter(|s| !s.is_ok()).collect();
    out.push('\n');
    if bad.is_empty() {
        let _ = writeln!(
            out,
            "All {} tools are present and new enough.",
            statuses.len()
        );
        return out;
    }
    for s in &bad {
        let _ = writeln!(out, "- {}", s.problem());
    }
    if image_ready(statuses) {
        out.push_str("`habuild image` can run; only `habuild test` is affected.\n");
    } else {
        out.push_str("`habuild image` cannot run until the tools marked `image` are fixed.\n");
    }
    let _ = writeln!(
        out,
        "Fix (as root on Debian 12): {FIX_COMMAND}\n  (installs: {})",
        packages_to_install(statuses).join(" ")
    );
    out
}

/// Pure core of [`require`]: an error listing every tool that is not fine,
/// with its package and the fix.
pub fn check_required(statuses: &[ToolStatus]) -> Result<()> {
    let bad: Vec<&ToolStatus> = statuses.iter().filter(|s| !s.is_ok()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = bad.iter().map(|s| format!("  - {}", s.problem())).collect();
    bail!(
        "{} required host tool(s) missing or too old:\n{}\nfix: run `{FIX_COMMAND}` as root, \
         or `apt-get install -t bookworm-backports {}`; `habuild doctor` shows every tool",
        bad.len(),
        lines.join("\n"),
        packages_to_install(statuses).join(" ")
    )
}

/// Checks `tools` (names from [`TOOLS`]) and fails, naming every missing or
/// too-old one with its package, unless all are fine. Call it before a
/// build stage starts any of them.
pub fn require(names: &[&str]) -> Result<()> {
    let mut list = Vec::with_capacity(names.len());
    for name in names {
        match tools::tool(name) {
            Some(t) => list.push(t),
            None => bail!("internal error: `{name}` is not in habuild's table of host tools"),
        }
    }
    check_required(&check_many(list))
}

/// The names of the tools needed for `need` (for `require`).
pub fn tools_for(need: Need) -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|t| t.need <= need)
        .map(|t| t.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn st(name: &str, path: Option<&str>, version: Option<&str>) -> ToolStatus {
        ToolStatus::new(
            tools::tool(name).unwrap(),
            path.map(PathBuf::from),
            version.and_then(Version::parse_prefix),
        )
    }

    #[test]
    fn states() {
        assert_eq!(
            st("mke2fs", Some("/usr/sbin/mke2fs"), Some("1.47.2")).state,
            State::Ok
        );
        assert_eq!(
            st("mke2fs", Some("/usr/sbin/mke2fs"), Some("1.47.0")).state,
            State::TooOld
        );
        assert_eq!(
            st("mke2fs", Some("/usr/sbin/mke2fs"), None).state,
            State::UnknownVersion
        );
        assert_eq!(st("mke2fs", None, None).state, State::Missing);
        // No minimum: an unreadable version is fine.
        assert_eq!(st("ip", Some("/usr/sbin/ip"), None).state, State::Ok);
    }

    #[test]
    fn table_all_ok() {
        let s = vec![
            st("mmdebstrap", Some("/usr/bin/mmdebstrap"), Some("1.5.5")),
            st("ovmf", Some("/usr/share/OVMF/OVMF_CODE_4M.fd"), None),
        ];
        let want = "\
TOOL        FOR    STATUS  VERSION  PACKAGE     NOTE
mmdebstrap  image  ok      1.5.5    mmdebstrap
ovmf        test   ok      file     ovmf        /usr/share/OVMF/OVMF_CODE_4M.fd

All 2 tools are present and new enough.
";
        assert_eq!(render_table(&s), want);
    }

    #[test]
    fn table_with_problems() {
        let s = vec![
            st("mke2fs", Some("/usr/sbin/mke2fs"), Some("1.47.0")),
            st("e2fsck", Some("/usr/sbin/e2fsck"), Some("1.47.0")),
            st("qemu-system-aarch64", None, None),
            st("ip", Some("/usr/sbin/ip"), Some("6.1.0")),
        ];
        let want = "\
TOOL                 FOR    STATUS   VERSION  PACKAGE                      NOTE
mke2fs               image  TOO OLD  1.47.0   e2fsprogs (backports)        needs >= 1.47.1
e2fsck               image  ok       1.47.0   e2fsprogs (backports)
qemu-system-aarch64  test   MISSING  -        qemu-system-arm (backports)  boots the Pi image (`-M raspi4b` needs QEMU 9.0) and arm64 guests
ip                   test   ok       6.1.0    iproute2

- mke2fs 1.47.0 is too old (needs >= 1.47.1): install package e2fsprogs (bookworm-backports on Debian 12)
- qemu-system-aarch64 is missing: install package qemu-system-arm (bookworm-backports on Debian 12)
`habuild image` cannot run until the tools marked `image` are fixed.
Fix (as root on Debian 12): habuild doctor --install
  (installs: e2fsprogs qemu-system-arm)
";
        assert_eq!(render_table(&s), want);
        assert!(!image_ready(&s));
    }

    #[test]
    fn table_test_only_problem() {
        let s = vec![
            st("mmdebstrap", Some("/usr/bin/mmdebstrap"), Some("1.5.5")),
            st("shellcheck", None, None),
        ];
        let out = render_table(&s);
        assert!(out.contains("only `habuild test` is affected"), "{out}");
        assert!(out.contains("(installs: shellcheck)"), "{out}");
        assert!(image_ready(&s));
    }

    #[test]
    fn required_error_names_every_package() {
        let s = vec![
            st("mmdebstrap", Some("/usr/bin/mmdebstrap"), Some("1.5.5")),
            st("qemu-aarch64-static", None, None),
            st("mkfs.vfat", None, None),
            st("mke2fs", Some("/usr/sbin/mke2fs"), Some("1.47.0")),
        ];
        let msg = format!("{:#}", check_required(&s).unwrap_err());
        assert!(msg.starts_with("3 required host tool(s)"), "{msg}");
        assert!(
            msg.contains("qemu-aarch64-static is missing: install package qemu-user-static"),
            "{msg}"
        );
        assert!(
            msg.contains("mkfs.vfat is missing: install package dosfstools"),
            "{msg}"
        );
        assert!(
            msg.contains("mke2fs 1.47.0 is too old (needs >= 1.47.1): install package e2fsprogs"),
            "{msg}"
        );
        assert!(msg.contains("habuild doctor --install"), "{msg}");
        assert!(
            msg.contains("qemu-user-static dosfstools e2fsprogs"),
            "{msg}"
        );
        assert!(!msg.contains("mmdebstrap"), "{msg}");
        assert!(check_required(&s[..1]).is_ok());
    }

    #[test]
    fn require_rejects_unknown_names() {
        let msg = format!("{:#}", require(&["no-such-tool"]).unwrap_err());
        assert!(msg.contains("no-such-tool"), "{msg}");
    }

    #[test]
    fn tools_for_image_is_a_subset() {
        let image = tools_for(Need::Image);
        let test = tools_for(Need::Test);
        assert!(image.contains(&"mmdebstrap") && !image.contains(&"shellcheck"));
        assert_eq!(test.len(), TOOLS.len());
    }

    /// The real host: probing works, and whatever `check_all` says about a
    /// tool, `require` agrees.
    #[test]
    fn host_probe_agrees_with_require() {
        let all = check_all();
        assert_eq!(all.len(), TOOLS.len());
        let ok: Vec<&str> = all
            .iter()
            .filter(|s| s.is_ok())
            .map(|s| s.tool.name)
            .collect();
        require(&ok).unwrap();
        let bad: Vec<&str> = all
            .iter()
            .filter(|s| !s.is_ok())
            .map(|s| s.tool.name)
            .collect();
        if !bad.is_empty() {
            assert!(require(&bad).is_err());
        }
        eprint!("{}", render_table(&all));
    }
}
