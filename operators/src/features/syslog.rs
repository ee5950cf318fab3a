//! The syslog family: what a host's messages say of it (volume, severities,
//! facilities, apps, message templates). Authentication facts are the auth
//! family's (auth.rs).

use amoskys_schemas::{FeatureDtype, WINDOW_SECONDS};

use super::entropy_bits;
use super::family::{FamilyFeature, dspec};
use crate::{Map, Set};

use FeatureDtype::{Count as C, Float as F};

const W: f64 = WINDOW_SECONDS as f64;

/// What one entity's syslog messages said in a pane, or (merged) a window.
#[derive(Clone, Debug, Default)]
pub struct SyslogAcc {
    /// Whether any syslog message came from or named the entity (the syslog
    /// and auth families are null otherwise).
    pub seen: bool,
    pub messages: u64,
    pub by_severity: [u64; 9],
    /// Messages by facility group (see [`facility_group`]).
    pub by_facility: [u64; 5],
    /// Distinct app names.
    pub apps: Set<u64>,
    /// Templates of the messages, with message counts.
    pub templates: Map<u64, u64>,
}

impl SyslogAcc {
    pub fn observe(&mut self, severity: u8, facility: u8, app: u64, template: u64) {
        self.seen = true;
        self.messages += 1;
        *self.templates.entry(template).or_insert(0) += 1;
        self.by_severity[usize::from(severity.min(8))] += 1;
        self.by_facility[usize::from(facility.min(4))] += 1;
        if app != 0 {
            self.apps.insert(app);
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &SyslogAcc) {
        self.seen |= l.seen;
        self.messages += l.messages;
        for (a, b) in self.by_severity.iter_mut().zip(l.by_severity) {
            *a += b;
        }
        for (a, b) in self.by_facility.iter_mut().zip(l.by_facility) {
            *a += b;
        }
        self.apps.extend(l.apps.iter().copied());
        for (t, n) in &l.templates {
            *self.templates.entry(*t).or_insert(0) += n;
        }
    }
}

/// The template of a syslog message, hashed: its app name and its words, each
/// word (split at whitespace) that contains a digit replaced by a placeholder. So
/// `Failed password for root from 10.0.0.1 port 4242 ssh2` and the same line with
/// another address and port share a template, while another user name does not.
pub fn template_hash(app: Option<&str>, message: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = amoskys_schemas::stable_hasher();
    h.write(app.unwrap_or("").as_bytes());
    h.write_u8(0);
    for w in message.split_whitespace() {
        if w.bytes().any(|b| b.is_ascii_digit()) {
            h.write(b"<*>");
        } else {
            h.write(w.as_bytes());
        }
        h.write_u8(b' ');
    }
    h.finish()
}

/// The facility groups counted apart.
pub(super) fn facility_group(f: Option<&str>) -> u8 {
    match f {
        Some("auth" | "authpriv") => 0,
        Some("kern") => 1,
        Some("daemon") => 2,
        Some(l) if l.starts_with("local") => 3,
        _ => 4,
    }
}

pub(super) const SYSLOG_NULL: Option<&str> =
    Some("no syslog message from or about the entity in the window");

/// The feature the window operator fills from the entity's recent templates.
pub const SYSLOG_NEW_TEMPLATES: &str = "syslog_new_templates";
const LOGGED_NULL: Option<&str> = Some("the entity logged no syslog message in the window");

fn logged(a: &SyslogAcc, v: f64) -> Option<f64> {
    (a.messages > 0).then_some(v)
}

/// `v`, when a syslog message came from or named the entity.
fn sys(a: &SyslogAcc, v: u64) -> Option<f64> {
    a.seen.then_some(v as f64)
}

pub(super) static SYSLOG_FEATURES: &[FamilyFeature<SyslogAcc>] = &[
    dspec(
        "syslog_messages",
        "syslog",
        "messages",
        C,
        "Syslog messages the entity sent.",
        SYSLOG_NULL,
        |a| sys(a, a.messages),
    ),
    dspec(
        "syslog_critical",
        "syslog",
        "messages",
        C,
        "Messages of severity emergency, alert or critical (0-2).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[..3].iter().sum()),
    ),
    dspec(
        "syslog_errors",
        "syslog",
        "messages",
        C,
        "Messages of severity error (3).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[3]),
    ),
    dspec(
        "syslog_warnings",
        "syslog",
        "messages",
        C,
        "Messages of severity warning (4).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[4]),
    ),
    dspec(
        "syslog_notices",
        "syslog",
        "messages",
        C,
        "Messages of severity notice (5).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[5]),
    ),
    dspec(
        "syslog_info",
        "syslog",
        "messages",
        C,
        "Messages of severity informational (6).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[6]),
    ),
    dspec(
        "syslog_debug",
        "syslog",
        "messages",
        C,
        "Messages of severity debug (7).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[7]),
    ),
    dspec(
        "syslog_messages_per_s",
        "syslog",
        "messages/s",
        F,
        "Syslog messages the entity sent per second of the window.",
        SYSLOG_NULL,
        |a| sys(a, a.messages).map(|v| v / W),
    ),
    dspec(
        "syslog_facility_auth",
        "syslog",
        "messages",
        C,
        "Messages of facility auth or authpriv.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[0]),
    ),
    dspec(
        "syslog_facility_kern",
        "syslog",
        "messages",
        C,
        "Messages of facility kern.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[1]),
    ),
    dspec(
        "syslog_facility_daemon",
        "syslog",
        "messages",
        C,
        "Messages of facility daemon.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[2]),
    ),
    dspec(
        "syslog_facility_local",
        "syslog",
        "messages",
        C,
        "Messages of facilities local0 to local7.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[3]),
    ),
    dspec(
        "syslog_distinct_apps",
        "syslog",
        "apps",
        C,
        "Distinct app names (tags) in the entity's messages.",
        SYSLOG_NULL,
        |a| sys(a, a.apps.len() as u64),
    ),
    dspec(
        "syslog_templates",
        "syslog",
        "templates",
        C,
        "Distinct message templates the entity logged: app name plus the message with \
         every word containing a digit replaced by a placeholder.",
        LOGGED_NULL,
        |a| logged(a, a.templates.len() as f64),
    ),
    dspec(
        "syslog_template_entropy",
        "syslog",
        "bits",
        F,
        "Shannon entropy of the entity's messages over their templates: 0 when one \
         kind of line repeats, high when many kinds are mixed.",
        LOGGED_NULL,
        |a| entropy_bits(a.templates.values().copied()),
    ),
    dspec(
        SYSLOG_NEW_TEMPLATES,
        "syslog",
        "templates",
        C,
        "Templates the entity logged in the window and in none of the 2 minutes \
         before it: a host printing kinds of lines it has not printed lately.",
        LOGGED_NULL,
        // Filled by the window operator, which remembers the entity's recent templates.
        |_| None,
    ),
];
