//! Watched interfaces that come and go: a deleted interface takes its attached programs with
//! it, and one recreated under the same name is a new device (a new index) with nothing
//! attached. Polling the name's index is enough to see both, costs one syscall per interface
//! and tick, and needs no netlink socket that could itself overflow.

use std::ffi::CString;

/// What changed for one watched interface since the last poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// No interface has this name any more.
    Gone { name: String },
    /// An interface has this name again (or the name now points at a new device): it needs
    /// attaching.
    Back { name: String, index: u32 },
}

/// The watched names and the index each had at the last poll (`None`: absent).
#[derive(Debug)]
pub struct Interfaces {
    watched: Vec<(String, Option<u32>)>,
    /// Times a watched interface disappeared.
    pub lost: u64,
}

impl Interfaces {
    /// Starts from the names and the indexes they were attached at.
    pub fn new(attached: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            watched: attached
                .into_iter()
                .map(|(name, index)| (name, Some(index)))
                .collect(),
            lost: 0,
        }
    }

    /// Compares each name's current index with the last one seen, using `index_of`.
    pub fn poll_with(&mut self, index_of: impl Fn(&str) -> Option<u32>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (name, last) in &mut self.watched {
            let now = index_of(name);
            if now == *last {
                continue;
            }
            if last.is_some() {
                self.lost += 1;
                changes.push(Change::Gone { name: name.clone() });
            }
            if let Some(index) = now {
                changes.push(Change::Back {
                    name: name.clone(),
                    index,
                });
            }
            *last = now;
        }
        changes
    }

    /// [`Self::poll_with`] the kernel's current indexes.
    pub fn poll(&mut self) -> Vec<Change> {
        self.poll_with(index_of)
    }
}

/// The interface's index in this network namespace, `None` when no interface has the name.
pub fn index_of(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_deleted_and_recreated_interface_is_gone_then_back_at_its_new_index() {
        let mut ifaces = Interfaces::new([("eth0".to_string(), 2), ("eth1".to_string(), 3)]);
        let mut host = HashMap::from([("eth0", 2), ("eth1", 3)]);
        assert_eq!(ifaces.poll_with(|name| host.get(name).copied()), []);

        host.remove("eth1");
        let gone = Change::Gone {
            name: "eth1".into(),
        };
        assert_eq!(ifaces.poll_with(|name| host.get(name).copied()), [gone]);
        assert_eq!(ifaces.poll_with(|name| host.get(name).copied()), []);

        host.insert("eth1", 7);
        let back = Change::Back {
            name: "eth1".into(),
            index: 7,
        };
        assert_eq!(ifaces.poll_with(|name| host.get(name).copied()), [back]);
        assert_eq!(ifaces.lost, 1);
    }

    #[test]
    fn a_quick_delete_and_recreate_between_polls_is_both_changes() {
        let mut ifaces = Interfaces::new([("eth0".to_string(), 2)]);
        let changes = ifaces.poll_with(|_| Some(9));
        assert_eq!(
            changes,
            [
                Change::Gone {
                    name: "eth0".into()
                },
                Change::Back {
                    name: "eth0".into(),
                    index: 9
                }
            ]
        );
        assert_eq!(ifaces.lost, 1);
    }

    #[test]
    fn the_loopback_device_has_an_index() {
        assert!(index_of("lo").is_some());
        assert_eq!(index_of("rw-no-such-if0"), None);
    }
}
