//! `--node-name`: the name of the host (the Kubernetes node) that saw each reset, added to every
//! record under the field its format keeps for it: `host` in JSON, `host.name` in ECS,
//! `device.hostname` in OCSF, `dvchost` in CEF. The text format, read on the host itself,
//! leaves it out.
//!
//! The name is added around the format's own rendering rather than inside it, so no format
//! needs to know about it: a JSON object gets one more leading member, a CEF record one more
//! extension.

use std::{fmt, str::FromStr};

use super::{Format, FormatKind};
use crate::report::ResetReport;

/// A host name as RFC 1123 allows it (letters, digits, `-` and `.`, at most 253 characters):
/// nothing in it needs escaping in JSON or CEF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeName(String);

impl FromStr for NodeName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if name.is_empty() || name.len() > 253 || !name.chars().all(allowed) {
            return Err(format!(
                "invalid node name '{name}': write a host name (letters, digits, '-' and '.', \
                 at most 253 characters)"
            ));
        }
        Ok(NodeName(name.to_string()))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `inner`, rendering format `kind`, with `node` added to each record (`inner` itself for
/// text).
pub fn with_node_name(
    kind: FormatKind,
    inner: Box<dyn Format>,
    node: &NodeName,
) -> Box<dyn Format> {
    let member = match kind {
        FormatKind::Text => return inner,
        FormatKind::Json => Addition::JsonMember(format!("\"host\":\"{node}\",")),
        FormatKind::Ecs => Addition::JsonMember(format!("\"host\":{{\"name\":\"{node}\"}},")),
        FormatKind::Ocsf => {
            Addition::JsonMember(format!("\"device\":{{\"hostname\":\"{node}\"}},"))
        }
        FormatKind::Cef => Addition::CefExtension(format!(" dvchost={node}")),
    };
    Box::new(WithNodeName { inner, member })
}

/// What is added to each record, already rendered.
enum Addition {
    /// A member placed first in the record's JSON object (after its `{`).
    JsonMember(String),
    /// An extension appended to the CEF record.
    CefExtension(String),
}

struct WithNodeName {
    inner: Box<dyn Format>,
    member: Addition,
}

impl Format for WithNodeName {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>) {
        let start = out.len();
        self.inner.render(report, out);
        match &self.member {
            Addition::JsonMember(member) => {
                if out.get(start) == Some(&b'{') {
                    out.splice(start + 1..start + 1, member.bytes());
                }
            }
            Addition::CefExtension(extension) => out.extend_from_slice(extension.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        output::{cef::Cef, ecs::Ecs, format, ocsf::Ocsf, Json},
        test_support::sample::middlebox_report,
    };

    fn rendered(kind: FormatKind) -> String {
        let node: NodeName = "node-a.example".parse().unwrap();
        let format = with_node_name(kind, format(kind, false), &node);
        let mut out = b"previous record".to_vec();
        let start = out.len();
        format.render(&middlebox_report(), &mut out);
        String::from_utf8(out[start..].to_vec()).unwrap()
    }

    fn json(kind: FormatKind) -> Value {
        serde_json::from_str(&rendered(kind)).unwrap()
    }

    #[test]
    fn each_format_carries_the_node_under_its_own_field() {
        assert_eq!(json(FormatKind::Json)["host"], "node-a.example");
        assert_eq!(json(FormatKind::Ecs)["host"]["name"], "node-a.example");
        assert_eq!(
            json(FormatKind::Ocsf)["device"]["hostname"],
            "node-a.example"
        );
        assert!(rendered(FormatKind::Cef).ends_with(" dvchost=node-a.example"));
        let mut plain = Vec::new();
        crate::output::Text::new(false).render(&middlebox_report(), &mut plain);
        assert_eq!(rendered(FormatKind::Text).into_bytes(), plain);
    }

    #[test]
    fn the_rest_of_the_record_is_untouched() {
        for (kind, plain) in [
            (FormatKind::Json, Box::new(Json) as Box<dyn Format>),
            (FormatKind::Ecs, Box::new(Ecs)),
            (FormatKind::Ocsf, Box::new(Ocsf)),
        ] {
            let mut expected = Vec::new();
            plain.render(&middlebox_report(), &mut expected);
            let mut expected: Value = serde_json::from_slice(&expected).unwrap();
            let mut with_node = json(kind);
            let key = if kind == FormatKind::Ocsf {
                "device"
            } else {
                "host"
            };
            assert!(expected.get(key).is_none(), "{kind:?} has its own {key}");
            with_node.as_object_mut().unwrap().remove(key);
            expected.as_object_mut().unwrap().remove(key);
            assert_eq!(with_node, expected, "{kind:?}");
        }
        let mut cef = Vec::new();
        Cef.render(&middlebox_report(), &mut cef);
        let cef = String::from_utf8(cef).unwrap();
        assert_eq!(
            rendered(FormatKind::Cef),
            format!("{cef} dvchost=node-a.example")
        );
    }

    #[test]
    fn node_names_are_host_names() {
        assert!("worker-7.eu-west".parse::<NodeName>().is_ok());
        for bad in ["", "a b", "node\"x", "a=b", &"x".repeat(254)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad}");
        }
    }
}
