//! Syslog: message parsing (RFC 3164 and RFC 5424, through syslog_loose), TCP
//! framing (RFC 6587 octet counting and newline-delimited, told apart per frame),
//! and the authentication facts common messages carry.

mod auth;
mod config;
mod file;
mod framing;
mod listener;
mod parse;
mod udp;

pub use amoskys_schemas::{AuthEvent, AuthKind, SyslogRecord};
pub use auth::auth_event;
pub use config::{ListenAddr, RecordTime, SyslogSourceConfig};
pub use file::RecordedLog;
pub use framing::{Frame, FrameDecoder, Framing};
pub use listener::{SyslogCounters, SyslogSource};
pub use parse::{ParseError, parse_message};
