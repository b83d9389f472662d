//! Test harness for the SIEM export: a real rsyslogd receiver, TLS certificates for it, and a
//! strict RFC 5424 parser for what it receives (the CEF reader and the sample reports are
//! `rstwatch::test_support`'s).

pub mod certs;
pub mod rfc5424;
pub mod rsyslog;
pub mod temp_dir;
