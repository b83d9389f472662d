//! A strict CEF reader, to check that what rstwatch writes reads back to exactly what it meant.

use std::collections::BTreeMap;

/// A parsed record: the seven header fields (the first being `CEF:0`) and the extensions.
#[derive(Debug)]
pub struct CefRecord {
    pub header: Vec<String>,
    pub extensions: BTreeMap<String, String>,
}

/// Parses one record. Header fields end at an unescaped `|` and know only `\\` and `\|`;
/// in the extensions every unescaped `=` ends a key (the word before it), a value runs to the
/// space before the next key, and values know only `\\`, `\=`, `\n` and `\r`.
pub fn parse(record: &str) -> Result<CefRecord, String> {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = record.chars();
    while header.len() < 7 {
        match chars.next() {
            None => return Err(format!("header has {} fields, not 7", header.len())),
            Some('\\') => match chars.next() {
                Some(c @ ('\\' | '|')) => field.push(c),
                other => return Err(format!("bad header escape \\{other:?}")),
            },
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
        }
    }
    if header[0] != "CEF:0" {
        return Err(format!("not CEF:0 but {:?}", header[0]));
    }

    let rest: Vec<char> = chars.collect();
    let mut equals = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            '\\' => i += 1,
            '=' => equals.push(i),
            '\n' | '\r' => return Err("raw line break in the extensions".into()),
            _ => {}
        }
        i += 1;
    }
    let key_start = |eq: usize| {
        rest[..eq]
            .iter()
            .rposition(|&c| c == ' ')
            .map_or(0, |space| space + 1)
    };
    let mut extensions = BTreeMap::new();
    for (n, &eq) in equals.iter().enumerate() {
        let key: String = rest[key_start(eq)..eq].iter().collect();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("bad extension key {key:?}"));
        }
        let end = equals
            .get(n + 1)
            .map_or(rest.len(), |&next| key_start(next).saturating_sub(1));
        let mut value = String::new();
        let mut raw = rest[eq + 1..end.max(eq + 1)].iter();
        while let Some(&c) = raw.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            value.push(match raw.next() {
                Some('n') => '\n',
                Some('r') => '\r',
                Some(&c @ ('\\' | '=')) => c,
                other => return Err(format!("bad extension escape \\{other:?} in {key}")),
            });
        }
        if extensions.insert(key.clone(), value).is_some() {
            return Err(format!("duplicate extension key {key}"));
        }
    }
    Ok(CefRecord { header, extensions })
}
