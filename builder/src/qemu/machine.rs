//! What every tier's guests share: the kernel command line QEMU boots an
//! image's kernel with, and the MAC of a guest's NIC.

/// The image's own command line with the console QEMU provides and the
/// profile's extra arguments (console= entries of the image are replaced).
pub fn qemu_cmdline(image_cmdline: &str, console: &str, extra: &[String]) -> String {
    let mut args: Vec<String> = image_cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .map(String::from)
        .collect();
    args.push(format!("console={console}"));
    args.extend(extra.iter().cloned());
    args.join(" ")
}

/// The MAC of a guest's NIC: locally administered (52:54:00 is QEMU's),
/// derived from its address so that logs name the same MAC every run.
pub fn guest_mac(addr: std::net::Ipv4Addr) -> String {
    let o = addr.octets();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_replaces_consoles() {
        let c = qemu_cmdline(
            "console=tty1 console=ttyS1,115200 root=LABEL=root rootwait\n",
            "ttyAMA0,115200",
            &["clk_ignore_unused".into()],
        );
        assert_eq!(
            c,
            "root=LABEL=root rootwait console=ttyAMA0,115200 clk_ignore_unused"
        );
    }

    #[test]
    fn macs_are_stable_and_local() {
        assert_eq!(
            guest_mac("10.10.197.98".parse().unwrap()),
            "52:54:00:0a:c5:62"
        );
    }
}
