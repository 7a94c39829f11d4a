//! A copy of the board's device tree that QEMU's `raspi4b` machine can
//! boot: QEMU models few bcm2711 peripherals, and the kernel aborts when it
//! probes one that is missing (docs/qemu.md lists what and why). The image
//! itself keeps the real DTB; only the copy given to `-dtb` is changed.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::CommandExt;

/// Compatible strings (prefixes) of devices QEMU's raspi4b does not model.
const UNMODELLED: &[&str] = &[
    "brcm,bcm2711-l2-intc",
    "brcm,bcm2835-i2c",
    "brcm,brcmstb-i2c",
    "brcm,bcm2711-hdmi",
    "brcm,bcm2711-hvs",
    "brcm,bcm2711-pixelvalve",
    "brcm,bcm2711-vec",
    "brcm,bcm2835-dsi",
    "brcm,bcm2711-v3d",
    "brcm,bcm2711-pcie",
    "brcm,bcm2711-genet-v5",
];

/// The SD card given with `-drive if=sd` sits on this controller (the
/// Wi-Fi slot on real boards), not on EMMC2.
const SD_CONTROLLER: &str = "/soc/mmc@7e300000";

/// Paths of the nodes to disable, found in `dtc -O dts` output: every node
/// whose `compatible` starts with an unmodelled device's, and `/gpu`.
pub fn nodes_to_disable(dts: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in dts.lines() {
        let t = line.trim();
        if let Some(head) = t.strip_suffix('{') {
            // "label: name@addr {" or "/ {"
            let name = head
                .trim()
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            stack.push(name);
            let path = node_path(&stack);
            if path == "/gpu" {
                out.push(path);
            }
        } else if t == "};" {
            stack.pop();
        } else if let Some(value) = t.strip_prefix("compatible = ") {
            let hit = value
                .trim_end_matches(';')
                .split("\", \"")
                .map(|c| c.trim_matches('"'))
                .any(|c| UNMODELLED.iter().any(|u| c.starts_with(u)));
            let path = node_path(&stack);
            if hit && !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

fn node_path(stack: &[String]) -> String {
    let parts: Vec<&str> = stack.iter().skip(1).map(String::as_str).collect();
    format!("/{}", parts.join("/"))
}

/// Writes the QEMU copy of `src` to `dest`.
pub fn make_qemu_dtb(src: &Path, dest: &Path) -> Result<Vec<String>> {
    std::fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    let dts = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(dest)
        .output_checked()
        .with_context(|| format!("decompiling {}", dest.display()))?;
    let disabled = nodes_to_disable(&dts);
    for path in &disabled {
        Command::new("fdtput")
            .args(["-t", "s"])
            .arg(dest)
            .args([path.as_str(), "status", "disabled"])
            .run_checked()?;
    }
    for prop in ["mmc-pwrseq", "non-removable"] {
        // Absent on some kernels' DTBs: deleting is best effort.
        let _ = Command::new("fdtput")
            .arg("-d")
            .arg(dest)
            .args([SD_CONTROLLER, prop])
            .run_checked();
    }
    let _ = Command::new("fdtput")
        .arg("-r")
        .arg(dest)
        .arg(format!("{SD_CONTROLLER}/wifi@1"))
        .run_checked();
    Command::new("fdtput")
        .args(["-t", "x"])
        .arg(dest)
        .args([SD_CONTROLLER, "broken-cd"])
        .run_checked()
        .context("marking the SD controller broken-cd")?;
    Ok(disabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DTS: &str = r#"/dts-v1/;

/ {
	compatible = "raspberrypi,4-model-b", "brcm,bcm2711";
	soc {
		i2c@7e205000 {
			compatible = "brcm,bcm2711-i2c", "brcm,bcm2835-i2c";
		};
		hdmi@7ef00700 {
			compatible = "brcm,bcm2711-hdmi0";
			ddc = <0x1>;
		};
		serial@7e201000 {
			compatible = "arm,pl011", "arm,primecell";
		};
		pixelvalve@7e206000 {
			compatible = "brcm,bcm2711-pixelvalve0";
		};
	};
	gpu {
		compatible = "brcm,bcm2711-vc5";
	};
	scb {
		pcie0: pcie@7d500000 {
			compatible = "brcm,bcm2711-pcie";
		};
	};
};
"#;

    #[test]
    fn finds_unmodelled_devices_only() {
        assert_eq!(
            nodes_to_disable(DTS),
            [
                "/soc/i2c@7e205000",
                "/soc/hdmi@7ef00700",
                "/soc/pixelvalve@7e206000",
                "/gpu",
                "/scb/pcie@7d500000"
            ]
        );
    }
}
