//! `habuild doctor [--install]`: checks (and with `--install` fixes) the
//! host tools habuild needs.

use anyhow::{bail, Result};

use crate::host::{doctor, setup};

/// Check the build machine's tools; with `--install`, install what is missing.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Install missing or too-old tools (as root on Debian 12: adds a
    /// bookworm-backports source on the host's Debian mirror, runs apt-get,
    /// registers qemu-user for arm64). Does nothing slow when all is present.
    #[arg(long)]
    pub install: bool,
    /// Print one JSON document (every tool, its state, version and package)
    /// on stdout; the table goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// Prints the tool table; fails if a tool `habuild image` needs is missing
/// or too old (tools needed only for tests give a warning, not an error).
pub fn run(args: &DoctorArgs) -> Result<()> {
    let statuses = if args.install {
        setup::install()?
    } else {
        doctor::check_all()
    };
    if args.json {
        super::output::document(&statuses_json(&statuses))?;
        eprint!("{}", doctor::render_table(&statuses));
    } else {
        print!("{}", doctor::render_table(&statuses));
    }
    if !doctor::image_ready(&statuses) {
        bail!(
            "host tools needed by `habuild image` are missing or too old (see the table above); \
             fix with `{}`",
            doctor::FIX_COMMAND
        );
    }
    Ok(())
}

/// `doctor --json` (pure): `ok` is whether `habuild image` can run.
pub fn statuses_json(statuses: &[doctor::ToolStatus]) -> serde_json::Value {
    serde_json::json!({
        "ok": doctor::image_ready(statuses),
        "fix": doctor::FIX_COMMAND,
        "tools": statuses.iter().map(|s| serde_json::json!({
            "name": s.tool.name,
            "needed_for": s.tool.need.to_string(),
            "state": match s.state {
                doctor::State::Ok => "ok",
                doctor::State::Missing => "missing",
                doctor::State::TooOld => "too-old",
                doctor::State::UnknownVersion => "unknown-version",
            },
            "path": s.path,
            "version": s.version.as_ref().map(ToString::to_string),
            "min_version": s.tool.min_version.map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")),
            "package": s.tool.package,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tools::TOOLS;

    #[test]
    fn json_names_each_tool_and_its_state() {
        let statuses: Vec<_> = TOOLS
            .iter()
            .map(|t| doctor::ToolStatus::new(t, None, None))
            .collect();
        let j = statuses_json(&statuses);
        assert_eq!(j["ok"], false);
        assert_eq!(j["tools"].as_array().unwrap().len(), TOOLS.len());
        assert_eq!(j["tools"][0]["state"], "missing");
        assert_eq!(j["tools"][0]["name"], TOOLS[0].name);
        assert_eq!(j["tools"][0]["package"], TOOLS[0].package);
    }
}
