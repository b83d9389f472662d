//! A JSON object written straight into the record buffer, byte for byte as `serde_json`'s
//! compact writer would write it (same string escapes, same number forms), without building a
//! value or a struct of owned strings first: rendering is on the path of every reset.

use std::{net::IpAddr, time::SystemTime};

use super::fields;

/// An object being written: keys and values in the order they are added.
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    #[inline]
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_str(self.out, value);
        self
    }

    /// A name of our own (an enum's `as_str`, a fixed caption): nothing in it needs
    /// escaping, so it is copied without a scan.
    #[inline]
    pub fn name(&mut self, key: &str, value: &str) -> &mut Self {
        debug_assert!(value.bytes().all(|byte| ESCAPE[usize::from(byte)] == 0));
        self.plain_str(key, |out| out.extend_from_slice(value.as_bytes()))
    }

    /// An array of names of our own (see `name`).
    pub fn names<'s>(&mut self, key: &str, values: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.key(key);
        self.out.push(b'[');
        for (i, value) in values.into_iter().enumerate() {
            if i != 0 {
                self.out.push(b',');
            }
            debug_assert!(value.bytes().all(|byte| ESCAPE[usize::from(byte)] == 0));
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        }
        self.out.push(b']');
        self
    }

    #[inline]
    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        fields::write_uint(self.out, value);
        self
    }

    #[inline]
    pub fn opt_uint(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(value) => self.uint(key, value),
            None => self.null(key),
        }
    }

    /// The key and its value when the value is known; nothing otherwise.
    #[inline]
    pub fn known_uint(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(value) => self.uint(key, value),
            None => self,
        }
    }

    #[inline]
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    #[inline]
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(b"null");
        self
    }

    /// An address in its standard text form (IPv6 as RFC 5952), as a string.
    #[inline]
    pub fn ip(&mut self, key: &str, value: IpAddr) -> &mut Self {
        self.plain_str(key, |out| fields::write_ip(out, value))
    }

    /// A time as `fields::rfc3339` spells it, as a string.
    #[inline]
    pub fn time(&mut self, key: &str, value: SystemTime) -> &mut Self {
        self.plain_str(key, |out| fields::write_rfc3339(out, value))
    }

    #[inline]
    pub fn opt_time(&mut self, key: &str, value: Option<SystemTime>) -> &mut Self {
        match value {
            Some(value) => self.time(key, value),
            None => self.null(key),
        }
    }

    /// An array of strings.
    pub fn strs<'s>(&mut self, key: &str, values: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.key(key);
        self.out.push(b'[');
        for (i, value) in values.into_iter().enumerate() {
            if i != 0 {
                self.out.push(b',');
            }
            write_str(self.out, value);
        }
        self.out.push(b']');
        self
    }

    /// A value built elsewhere, for the rare records that carry one.
    pub fn value(&mut self, key: &str, value: &serde_json::Value) -> &mut Self {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value).expect("a JSON value always serialises");
        self
    }

    /// An array of objects, each written by `fill` from one item.
    pub fn objects<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        fill: impl Fn(&mut JsonObject<'_>, T),
    ) -> &mut Self {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i != 0 {
                self.out.push(b',');
            }
            let mut object = JsonObject::new(self.out);
            fill(&mut object, item);
            object.end();
        }
        self.out.push(b']');
        self
    }

    /// A nested object, written by `fill`.
    pub fn object(&mut self, key: &str, fill: impl FnOnce(&mut JsonObject<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = JsonObject::new(self.out);
        fill(&mut inner);
        inner.end();
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }

    /// A string `write` puts in place, with nothing in it to escape.
    #[inline]
    pub fn plain_str(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        write(self.out);
        self.out.push(b'"');
        self
    }

    /// Keys are names of our own: nothing in them needs escaping. Inlined, so that a key
    /// written as a literal is copied as a constant.
    #[inline(always)]
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|byte| ESCAPE[usize::from(byte)] == 0));
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
}

/// `value` as a JSON string: `"` and `\` escaped, control characters as their short escape
/// or `\u00XX` (lower-case hex), everything else (non-ASCII included) as is.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let Some(first) = bytes
        .iter()
        .position(|&byte| ESCAPE[usize::from(byte)] != 0)
    else {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    };
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate().skip(first) {
        let escape = ESCAPE[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// For each byte, 0 when it stands as is, else the letter after the backslash of its escape
/// (`u` for `\u00XX`): one table lookup per byte on the common path.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character class serde_json treats specially, and some it does not.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut text: String = (0u8..0x80).map(char::from).collect();
        text.push_str("ünï日本 / \u{2028}");
        let mut out = Vec::new();
        write_str(&mut out, &text);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&text).unwrap()
        );
    }

    #[test]
    fn objects_match_serde_json() {
        let mut out = Vec::new();
        let mut object = JsonObject::new(&mut out);
        object
            .str("a", "x\"y")
            .uint("b", u64::MAX)
            .opt_uint("c", None)
            .known_uint("unknown", None)
            .bool("d", true)
            .ip("e", "2001:db8::1".parse().unwrap())
            .strs("f", ["g", "h"])
            .strs("i", [])
            .object("j", |inner| {
                inner.uint("k", 0);
            })
            .objects("l", [1, 2], |item, n| {
                item.uint("m", n);
            });
        object.end();
        let expected = serde_json::json!({
            "a": "x\"y", "b": u64::MAX, "c": null, "d": true, "e": "2001:db8::1",
            "f": ["g", "h"], "i": [], "j": {"k": 0}, "l": [{"m": 1}, {"m": 2}],
        });
        assert_eq!(String::from_utf8(out).unwrap(), expected.to_string());
    }
}
