//! Debian control data (deb822 stanzas): dpkg's status file, apt's Packages
//! indexes and Release files, `apt-get indextargets`. Zero-copy, so a 50 MB
//! Packages index is read without copying each field.

/// One stanza: its fields in order, and its text as it stands in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza<'a> {
    pub text: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Stanza<'a> {
    /// The value of field `name` (case-insensitive, as dpkg reads them),
    /// trimmed; continuation lines stay in the value with their newlines.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// The stanzas of `text`, separated by blank lines. Lines that are neither
/// `Name: value` nor a continuation (leading space or tab) are ignored,
/// as is the PGP armour around a signed Release file's fields (its lines
/// have no `: `).
pub fn stanzas(text: &str) -> Vec<Stanza<'_>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    // (name, value start, value end) of the field being read.
    let mut open: Option<(&str, usize, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim().is_empty() {
            if let Some(s) = start.take() {
                close(&mut fields, text, open.take());
                out.push(Stanza {
                    text: &text[s..line_start],
                    fields: std::mem::take(&mut fields),
                });
            }
            continue;
        }
        start.get_or_insert(line_start);
        if body.starts_with([' ', '\t']) {
            if let Some((_, _, end)) = open.as_mut() {
                *end = line_start + body.len();
            }
            continue;
        }
        close(&mut fields, text, open.take());
        if let Some((name, _)) = body.split_once(':') {
            let value_start = line_start + name.len() + 1;
            open = Some((name.trim(), value_start, line_start + body.len()));
        }
    }
    if let Some(s) = start {
        close(&mut fields, text, open.take());
        out.push(Stanza {
            text: &text[s..],
            fields,
        });
    }
    out
}

fn close<'a>(
    fields: &mut Vec<(&'a str, &'a str)>,
    text: &'a str,
    open: Option<(&'a str, usize, usize)>,
) {
    if let Some((name, from, to)) = open {
        fields.push((name, text[from..to].trim()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_stanza_text() {
        let text = "Package: a\nVersion: 1\nDescription: short\n long line\n .\n more\n\n\nPackage: b\r\nversion: 2\r\n";
        let s = stanzas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("package"), Some("a"));
        assert_eq!(
            s[0].get("Description"),
            Some("short\n long line\n .\n more")
        );
        assert_eq!(
            s[0].text,
            "Package: a\nVersion: 1\nDescription: short\n long line\n .\n more\n"
        );
        assert_eq!(s[1].get("Version"), Some("2"));
        assert_eq!(s[1].get("Missing"), None);
    }

    #[test]
    fn name_must_match_whole() {
        let s = stanzas("Package-Type: udeb\nPackage: x\n");
        assert_eq!(s[0].get("Package"), Some("x"));
    }
}
