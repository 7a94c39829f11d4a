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
}

/// Prints the tool table; fails if a tool `habuild image` needs is missing
/// or too old (tools needed only for tests give a warning, not an error).
pub fn run(args: &DoctorArgs) -> Result<()> {
    let statuses = if args.install {
        setup::install()?
    } else {
        doctor::check_all()
    };
    print!("{}", doctor::render_table(&statuses));
    if !doctor::image_ready(&statuses) {
        bail!(
            "host tools needed by `habuild image` are missing or too old (see the table above); \
             fix with `{}`",
            doctor::FIX_COMMAND
        );
    }
    Ok(())
}
