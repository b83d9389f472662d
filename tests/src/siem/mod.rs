//! Test harness for the SIEM export: a real rsyslogd receiver, TLS certificates for it, and
//! strict parsers for what it receives (RFC 5424, CEF).

pub mod cef;
pub mod certs;
pub mod rfc5424;
pub mod rsyslog;
pub mod sample;
pub mod temp_dir;
