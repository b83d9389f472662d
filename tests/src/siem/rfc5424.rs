//! A strict reader of RFC 5424 syslog messages as a receiver got them.

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`
#[derive(Debug)]
pub struct SyslogMessage {
    pub pri: u8,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    pub msg: String,
}

pub fn parse(line: &str) -> Result<SyslogMessage, String> {
    let rest = line.strip_prefix('<').ok_or("no `<PRI>`")?;
    let (pri, rest) = rest.split_once('>').ok_or("unterminated PRI")?;
    let pri: u8 = pri.parse().map_err(|_| format!("bad PRI {pri:?}"))?;
    if pri > 191 {
        return Err(format!("PRI {pri} out of range"));
    }
    let rest = rest.strip_prefix("1 ").ok_or("not syslog version 1")?;
    let mut fields = rest.splitn(6, ' ');
    let mut field = |name: &str, max: usize| -> Result<String, String> {
        let value = fields.next().ok_or(format!("no {name}"))?;
        if value.is_empty() || value.len() > max || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!("bad {name} {value:?}"));
        }
        Ok(value.to_owned())
    };
    let timestamp = field("TIMESTAMP", 32)?;
    let hostname = field("HOSTNAME", 255)?;
    let app_name = field("APP-NAME", 48)?;
    let procid = field("PROCID", 128)?;
    let msgid = field("MSGID", 32)?;
    let rest = fields.next().ok_or("no STRUCTURED-DATA")?;
    let (structured_data, msg) = split_structured_data(rest)?;
    Ok(SyslogMessage {
        pri,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data: structured_data.to_owned(),
        msg: msg.to_owned(),
    })
}

/// Splits `-` or `[ID param="value" ...]...` from the message after it; values may hold
/// escaped `"`, `\` and `]`.
fn split_structured_data(text: &str) -> Result<(&str, &str), String> {
    if let Some(msg) = text.strip_prefix("- ") {
        return Ok(("-", msg));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while bytes.get(i) == Some(&b'[') {
        let mut quoted = false;
        loop {
            i += 1;
            match bytes.get(i) {
                None => return Err("unterminated structured data".into()),
                Some(b'\\') if quoted => i += 1,
                Some(b'"') => quoted = !quoted,
                Some(b']') if !quoted => break,
                Some(_) => {}
            }
        }
        i += 1;
    }
    if i == 0 {
        return Err(format!("bad structured data at {text:?}"));
    }
    let msg = text[i..].strip_prefix(' ').ok_or("no space before MSG")?;
    Ok((&text[..i], msg))
}
