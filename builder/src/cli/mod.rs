//! Command-line interface: one file per subcommand; `main` only parses,
//! sets up logging and maps errors to exit codes.

pub mod bundle;
pub mod cache;
pub mod doctor;
pub mod flash;
pub mod image;
pub mod kubeconfig;
pub mod lock;
pub mod output;
#[cfg(test)]
mod readme_tests;
pub mod secrets;
pub mod shell;
pub mod sources;
pub mod status;
pub mod test;
pub mod test_doubles;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ConfigErrors;

#[derive(Debug, Parser)]
#[command(
    name = "habuild",
    version,
    about = "Builds and proves flashable images for a kubeadm HA control plane on Raspberry Pi 4 boards and its LVS director"
)]
pub struct Cli {
    /// Show every external command habuild runs (-vv: and their output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print no progress (steps, timings, spinners): only warnings, errors
    /// and the command's result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build node images from the cluster manifest.
    Image(Box<image::ImageArgs>),
    /// Pin every package of every image in a lock file (habuild.lock), or check it (--check).
    Lock(Box<lock::LockArgs>),
    /// Check (and with --install, set up) the host tools the build needs.
    Doctor(doctor::DoctorArgs),
    /// Check the cached base root filesystems against their digests, or prune the cache.
    Cache(cache::CacheArgs),
    /// Write an image to an SD card (or file): bmap-aware, verified, refuses disks in use.
    Flash(flash::FlashArgs),
    /// Create (once) or show the cluster's secrets file: CAs, service-account key, bootstrap token.
    Secrets(secrets::SecretsArgs),
    /// Write an admin kubeconfig for the cluster's API VIP, signed by the cluster CA.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Check an image, or a card it was flashed to, against its SHA256SUMS, bmap and <node>.json.
    Verify(verify::VerifyArgs),
    /// Report the control plane's health through the VIP: nodes, API servers, etcd, real servers.
    Status(status::StatusArgs),
    /// Boot built images under QEMU and check them from inside.
    Test(test::TestArgs),
    /// Build the offline Kubernetes/CRI-O bundle (.debs and control-plane images) from pinned upstream source.
    Bundle(bundle::BundleArgs),
    /// Build the offline bundle of Kubernetes/CRI-O TEST DOUBLES (for tests only).
    TestDoubles(test_doubles::TestDoublesArgs),
    /// Print a shell completion script (bash, zsh, fish, ...) on stdout.
    Completions(shell::CompletionsArgs),
    /// Write man pages (habuild.1 and one per subcommand) into a directory.
    Man(shell::ManArgs),
    /// Started by habuild itself: stops its tools if it dies (util::children).
    #[command(hide = true)]
    InternalReaper,
}

/// The manifest (default: the seed's) and its cluster's secrets (default:
/// beside it), loaded and checked against each other: what `kubeconfig`
/// and `status` start from.
pub fn cluster_and_secrets(
    manifest: Option<&std::path::Path>,
    secrets: Option<&std::path::Path>,
) -> anyhow::Result<(
    crate::config::manifest::Cluster,
    crate::pki::secrets::ClusterSecrets,
)> {
    let project = crate::config::Project::locate()?;
    let manifest = manifest
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| project.root.join(crate::config::DEFAULT_MANIFEST));
    let cluster = project.manifest(Some(&manifest))?;
    let path = crate::pki::store::resolve(&manifest, secrets);
    // No note about an unpinned CA here: that is for builds (once each).
    let (s, _) = crate::pki::store::load_for_cluster(&path, &cluster, &manifest)?;
    Ok((cluster, s))
}

/// Whether the command was asked for a JSON document (`--json`).
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Image(a) => a.json,
        Command::Verify(a) => a.json,
        Command::Test(a) => a.json,
        Command::Doctor(a) => a.json,
        Command::Status(a) => a.json,
        Command::Secrets(a) => matches!(&a.command, secrets::SecretsCommand::Show(s) if s.json),
        _ => false,
    }
}

/// Exit codes (one table, `output::exit_code`): 0 success, 1 failure,
/// 2 usage or configuration error; clap's usage errors exit 2 as well.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::InternalReaper = cli.command {
        crate::util::children::reaper_main(std::io::stdin().lock());
        return ExitCode::SUCCESS;
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Warn,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    crate::util::progress::set_quiet(cli.quiet);
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("HABUILD_LOG")
        .init();
    crate::util::cleanup::install_interrupt_handler();
    crate::util::children::enable_reaper();
    let result = match &cli.command {
        Command::Image(a) => image::run(a),
        Command::Lock(a) => lock::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Cache(a) => cache::run(a),
        Command::Flash(a) => flash::run(a),
        Command::Secrets(a) => secrets::run(a),
        Command::Kubeconfig(a) => kubeconfig::run(a),
        Command::Status(a) => status::run(a),
        Command::Test(a) => test::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Bundle(a) => bundle::run(a),
        Command::TestDoubles(a) => test_doubles::run(a),
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(a),
        // Ran above, before logging and the interrupt handler.
        Command::InternalReaper => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = output::exit_code(&err);
            if wants_json(&cli.command) && !output::document_printed() {
                // A script still reads one document; a failure to print it
                // leaves the message below on stderr.
                let _ = output::document(&output::error_document(&err));
            }
            match err.downcast_ref::<ConfigErrors>() {
                Some(cfg) => eprintln!("error: {cfg}"),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::from(code)
        }
    }
}
