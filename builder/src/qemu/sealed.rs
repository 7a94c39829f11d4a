//! Reads the fact blocks that test guests print on their serial console
//! (qemu/guest-check.sh, qemu/tier2-facts.sh). The console is shared with
//! the kernel and getty, whose output can land in the middle of a line, so
//! each block is sealed: `BEGIN <id>`, the lines, `END <id> <sha256>` where
//! the sha256 covers the lines, each followed by a newline. A block whose
//! lines do not hash to its seal is reported as garbled, never read.

use sha2::{Digest, Sha256};

#[derive(Debug, PartialEq, Eq)]
pub struct SealedBlock {
    pub id: String,
    pub lines: Vec<String>,
    /// The lines hash to the seal on the END line.
    pub intact: bool,
}

/// Every complete block (one with its END line) in `log`, in order.
pub fn sealed_blocks(log: &str, begin: &str, end: &str) -> Vec<SealedBlock> {
    let mut blocks = Vec::new();
    // (id, the writer's console prefix, lines so far)
    let mut open: Option<(String, Option<String>, Vec<String>)> = None;
    for raw in log.lines() {
        let raw = raw.trim_end_matches('\r');
        let (writer, text) = split_writer(raw);
        if let Some(id) = keyword_arg(text, begin) {
            open = Some((id.to_string(), writer.map(str::to_string), Vec::new()));
            continue;
        }
        let Some((id, block_writer, lines)) = open.as_mut() else {
            continue;
        };
        // Whole lines from other writers (kernel, getty) are not the block's.
        if writer != block_writer.as_deref() {
            continue;
        }
        if let Some(rest) = keyword_arg(text, end) {
            let (end_id, seal) = rest.split_once(' ').unwrap_or((rest, ""));
            if end_id == id {
                let (id, _, lines) = open.take().expect("a block is open");
                let intact = seal_of(&lines) == seal.trim();
                blocks.push(SealedBlock { id, lines, intact });
                continue;
            }
        }
        lines.push(text.to_string());
    }
    blocks
}

/// The seal the guest scripts compute: `printf '%s\n' "$lines" | sha256sum`.
pub fn seal_of<S: AsRef<str>>(lines: &[S]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_ref().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// journald forwards a unit's output to the console as
/// `[  77.49] sh[463]: text`, sometimes after a getty prompt without a line
/// end: returns (`sh[463]`, `text`), or (None, the line) for other lines.
fn split_writer(line: &str) -> (Option<&str>, &str) {
    let Some(colon) = line.find("]: ") else {
        return (None, line);
    };
    let head = &line[..=colon];
    let ident_start = head.rfind(' ').map_or(0, |i| i + 1);
    let ident = &head[ident_start..];
    let is_ident = ident.len() > 2
        && ident.contains('[')
        && ident[ident.find('[').unwrap() + 1..ident.len() - 1]
            .chars()
            .all(|c| c.is_ascii_digit());
    if is_ident {
        (Some(ident), &line[colon + 3..])
    } else {
        (None, line)
    }
}

/// `text` is `keyword arg…`: returns `arg…`.
fn keyword_arg<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    text.strip_prefix(keyword)?.strip_prefix(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journald(lines: &[&str]) -> String {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("[   40.{i:06}] sh[429]: {l}\r\n"))
            .collect()
    }

    #[test]
    fn reads_an_intact_block_and_skips_other_writers() {
        let body = ["state running", "unit keepalived.service enabled active"];
        let seal = seal_of(&body);
        let mut log = journald(&["HABUILD-BEGIN 1", body[0]]);
        log.push_str("[   41.245130] virtio_net virtio0 lan0: TX timeout\r\n");
        log.push_str("master-x86-1 login: ");
        log.push_str(&journald(&[body[1], &format!("HABUILD-END 1 {seal}")]));
        let blocks = sealed_blocks(&log, "HABUILD-BEGIN", "HABUILD-END");
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].intact, "{blocks:?}");
        assert_eq!(blocks[0].lines, body);
    }

    #[test]
    fn a_kernel_line_inside_a_report_line_breaks_the_seal() {
        // As seen in CI: the kernel's message landed before the line's end.
        let body = ["state running", "unit keepalived.service enabled active"];
        let seal = seal_of(&body);
        let log = journald(&[
            "HABUILD-BEGIN 1",
            body[0],
            "unit keepalived.service enabled active[   30.1] random: crng init done",
            &format!("HABUILD-END 1 {seal}"),
            "HABUILD-BEGIN 2",
            body[0],
            body[1],
            &format!("HABUILD-END 2 {seal}"),
        ]);
        let blocks = sealed_blocks(&log, "HABUILD-BEGIN", "HABUILD-END");
        assert_eq!(
            blocks.iter().map(|b| b.intact).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn unfinished_or_truncated_blocks_are_not_intact() {
        let body = ["hostname a"];
        let seal = seal_of(&body);
        let log = format!(
            "HABUILD-T2-BEGIN 3\nhostname a\nHABUILD-T2-END 3 {}\nHABUILD-T2-BEGIN 4\nhostname a\n",
            &seal[..20]
        );
        let blocks = sealed_blocks(&log, "HABUILD-T2-BEGIN", "HABUILD-T2-END");
        assert_eq!(blocks.len(), 1, "block 4 has no END line");
        assert!(!blocks[0].intact);
        // Plain lines (no journald prefix) work too.
        let log = format!("HABUILD-T2-BEGIN 3\nhostname a\nHABUILD-T2-END 3 {seal}\n");
        assert!(sealed_blocks(&log, "HABUILD-T2-BEGIN", "HABUILD-T2-END")[0].intact);
    }

    fn qemu_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu")
    }

    /// What journald makes of a unit's output on the console: a prefix,
    /// trailing whitespace dropped, empty lines dropped.
    fn through_journald(out: &str) -> String {
        out.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(|l| format!("[   40.1] sh[429]: {l}\r\n"))
            .collect()
    }

    #[test]
    fn the_guests_seal_survives_journald() {
        // ipvsadm pads its columns: trailing spaces, as in tier 2.
        let input = "ipvs TCP  10.10.197.101:6443 wrr\nipvs   -> 10.10.197.97:6443   Route   10     0          0         \n\nkeepalived active\n";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}/seal.sh'; printf '%s' \"$1\" | seal_block HABUILD-T2-BEGIN HABUILD-T2-END 5",
                qemu_dir().display()
            ))
            .args(["sh", input])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        let blocks = sealed_blocks(
            &through_journald(&printed),
            "HABUILD-T2-BEGIN",
            "HABUILD-T2-END",
        );
        assert_eq!(blocks.len(), 1, "{printed}");
        assert!(blocks[0].intact, "{printed}");
        assert_eq!(blocks[0].id, "5");
        assert_eq!(
            blocks[0].lines,
            [
                "ipvs TCP  10.10.197.101:6443 wrr",
                "ipvs   -> 10.10.197.97:6443   Route   10     0          0",
                "keepalived active"
            ]
        );
    }

    #[test]
    fn guest_scripts_pass_shellcheck() {
        if std::process::Command::new("shellcheck")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        let dir = qemu_dir();
        let scripts: Vec<_> = [
            "seal.sh",
            "guest-check.sh",
            "tier2-facts.sh",
            "tier3-facts.sh",
        ]
        .iter()
        .map(|s| dir.join(s))
        .collect();
        let out = std::process::Command::new("shellcheck")
            .arg("--norc")
            .arg("-x")
            .current_dir(&dir)
            .args(&scripts)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
