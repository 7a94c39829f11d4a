//! The two small C programs the bundle needs, compiled statically from the
//! pinned Go modules' own source as their Makefiles do: CRI-O's `pinns`
//! (pins namespaces for pods) and Kubernetes' `pause` (the pod sandbox's
//! process). Cross-compiled for arm64 with Debian's gcc-aarch64-linux-gnu.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::CommandExt;

/// A C program of a pinned module.
#[derive(Debug, Clone, Copy)]
pub struct CProgram {
    pub name: &'static str,
    /// Source files, relative to the module's directory.
    pub sources: &'static [&'static str],
    /// Compiler flags, from the program's Makefile.
    pub cflags: &'static [&'static str],
}

/// cri-o's pinns/Makefile: `-std=c99 -Os -Wall -Werror -Wextra -static`.
pub const PINNS: CProgram = CProgram {
    name: "pinns",
    sources: &["pinns/src/pinns.c", "pinns/src/sysctl.c"],
    cflags: &["-std=c99", "-Os", "-Wall", "-Wextra", "-static", "-s"],
};

/// kubernetes' build/pause/Makefile: `-Os -Wall -Werror -static`.
pub const PAUSE: CProgram = CProgram {
    name: "pause",
    sources: &["build/pause/linux/pause.c"],
    cflags: &["-Os", "-Wall", "-static", "-s"],
};

/// The C compiler that targets `arch` from this (x86-64) host.
pub fn compiler(arch: &str) -> Result<&'static str> {
    match arch {
        "amd64" => Ok("gcc"),
        "arm64" => Ok("aarch64-linux-gnu-gcc"),
        other => bail!("no C compiler known for architecture {other:?} (amd64, arm64)"),
    }
}

/// The pause version the Makefile tags (`TAG ?= 3.10.2`).
pub fn pause_tag(makefile: &str) -> Option<String> {
    makefile.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("TAG")?.trim_start();
        let v = rest.strip_prefix("?=").or_else(|| rest.strip_prefix('='))?;
        Some(v.trim().to_string())
    })
}

/// Compiles `p` from `module_dir` into `out/<name>`; `defines` are extra
/// `-D` flags (the pause version).
pub fn compile(
    p: &CProgram,
    module_dir: &Path,
    arch: &str,
    defines: &[String],
    out: &Path,
) -> Result<PathBuf> {
    let cc = compiler(arch)?;
    let bin = out.join(p.name);
    let mut cmd = Command::new(cc);
    cmd.args(p.cflags)
        .args(defines.iter().map(|d| format!("-D{d}")))
        // Reproducible: no build path in the binary.
        .arg(format!("-ffile-prefix-map={}=.", module_dir.display()))
        .arg("-o")
        .arg(&bin);
    for s in p.sources {
        cmd.arg(module_dir.join(s));
    }
    cmd.run_checked().with_context(|| {
        format!(
            "compiling {} for {arch} from {} (needs {cc}: `habuild doctor --install`)",
            p.name,
            module_dir.display()
        )
    })?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pause_tag() {
        let mk = "# c\nREGISTRY ?= x\nTAG ?= 3.10.2\nREV = $(shell git)\n";
        assert_eq!(pause_tag(mk).as_deref(), Some("3.10.2"));
        assert_eq!(pause_tag("TAGS = a\n").as_deref(), None);
    }

    #[test]
    fn knows_the_cross_compilers() {
        assert_eq!(compiler("arm64").unwrap(), "aarch64-linux-gnu-gcc");
        assert!(compiler("riscv64").is_err());
    }
}
