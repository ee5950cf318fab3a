//! The authentication family: what login lines say about the host that logged
//! them and about the remote side they name, each failed attempt counted once
//! however many of its writers logged it.

use amoskys_schemas::{Addr, AuthKind, FeatureDtype};
use serde::{Deserialize, Serialize};

use super::family::{FamilyFeature, dspec};
use super::syslog::SYSLOG_NULL;
use crate::Set;

use FeatureDtype::{Count as C, Float as F};

/// The authentication part of a syslog message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthObs {
    /// [`AuthKind`] as its index in [`AuthKind::ALL`].
    pub kind: u8,
    /// For a failed login: which service (0 SSH, 1 FTP, 2 any other) and which
    /// writer (0 the service's own line, 1 sshd relaying PAM, 2 PAM itself, 3
    /// the kernel's audit records), as `service * 4 + writer`. One attempt is often logged by two or three of
    /// them, so each service's failures are the most any one writer logged.
    pub fail: Option<u8>,
    /// Hash of the user name.
    pub user: Option<u64>,
    pub remote: Option<Addr>,
    pub count: u32,
    /// The line's client-chosen text embeds its address structure.
    pub injection: bool,
}

/// `v`, when a syslog message came from or named the entity.
fn sys(a: &AuthAcc, v: u64) -> Option<f64> {
    a.seen.then_some(v as f64)
}

pub(super) const AUTH_KINDS: usize = AuthKind::ALL.len();
/// Writers of one failed attempt: the service, sshd relaying PAM, PAM, audit.
const WRITERS: u8 = 4;
/// Failure slots: 3 services times 4 writers (see [`AuthObs::fail`]).
pub(super) const FAIL_SLOTS: usize = 3 * WRITERS as usize;

/// What authentication lines said of one entity in a pane, or (merged) a
/// window: as the host that logged them, and as the remote side they name.
#[derive(Clone, Debug, Default)]
pub struct AuthAcc {
    /// Whether any syslog message came from or named the entity: the family is
    /// null otherwise, and counts 0 for a host that logged no such fact.
    pub seen: bool,
    /// Facts the host logged, by kind.
    pub kinds: [u64; AUTH_KINDS],
    /// Failed logins the host logged, by service and writer.
    pub fails: [u64; FAIL_SLOTS],
    /// Lines the host logged whose client-chosen text embeds an address.
    pub injections: u64,
    pub users: Set<u64>,
    pub remotes: Set<Addr>,
    /// Facts naming the entity as the remote side, by kind.
    pub kinds_as_remote: [u64; AUTH_KINDS],
    pub fails_as_remote: [u64; FAIL_SLOTS],
    pub users_as_remote: Set<u64>,
    pub reporters_as_remote: Set<Addr>,
}

impl AuthAcc {
    /// A fact the entity logged.
    pub fn observe(&mut self, a: &AuthObs) {
        let n = u64::from(a.count);
        self.kinds[usize::from(a.kind).min(AUTH_KINDS - 1)] += n;
        if let Some(f) = a.fail {
            self.fails[usize::from(f).min(FAIL_SLOTS - 1)] += n;
        }
        self.injections += u64::from(a.injection);
        self.users.extend(a.user);
        self.remotes.extend(a.remote);
    }

    /// A fact naming the entity as the remote side, logged by `reporter`.
    pub fn observe_as_remote(&mut self, a: &AuthObs, reporter: Option<Addr>) {
        let n = u64::from(a.count);
        self.kinds_as_remote[usize::from(a.kind).min(AUTH_KINDS - 1)] += n;
        if let Some(f) = a.fail {
            self.fails_as_remote[usize::from(f).min(FAIL_SLOTS - 1)] += n;
        }
        self.users_as_remote.extend(a.user);
        self.reporters_as_remote.extend(reporter);
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &AuthAcc) {
        self.seen |= l.seen;
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.kinds, &l.kinds);
        add(&mut self.fails, &l.fails);
        add(&mut self.kinds_as_remote, &l.kinds_as_remote);
        add(&mut self.fails_as_remote, &l.fails_as_remote);
        self.injections += l.injections;
        self.users.extend(l.users.iter().copied());
        self.remotes.extend(l.remotes.iter().copied());
        self.users_as_remote
            .extend(l.users_as_remote.iter().copied());
        self.reporters_as_remote
            .extend(l.reporters_as_remote.iter().copied());
    }
}

pub(super) fn auth_code(k: AuthKind) -> u8 {
    k as u8
}

pub(super) fn kind_at(a: &[u64; AUTH_KINDS], k: AuthKind) -> u64 {
    a[usize::from(auth_code(k))]
}

/// The failure slot of an authentication fact (see [`AuthObs::fail`]).
pub(super) fn fail_slot(a: &amoskys_schemas::AuthEvent) -> Option<u8> {
    let writer = match (a.kind, a.form) {
        // A client asking which methods exist is no guess.
        (AuthKind::Failure, "sshd_failed_none") => return None,
        // The kernel's audit trail records the same attempts once more.
        (AuthKind::Failure | AuthKind::PamFailure, f) if f.starts_with("auditd") => 3,
        (AuthKind::Failure, _) => 0,
        (AuthKind::PamFailure, "sshd_pam_error") => 1,
        (AuthKind::PamFailure, _) => 2,
        _ => return None,
    };
    let service = match a.service.as_deref().unwrap_or("") {
        s if s.starts_with("ssh") || s == "dropbear" => 0,
        s if s.contains("ftp") => 1,
        _ => 2,
    };
    Some(service * WRITERS + writer)
}

/// Failed logins: per service, the most any one writer logged.
pub(super) fn failures(f: &[u64; FAIL_SLOTS]) -> u64 {
    f.chunks(usize::from(WRITERS))
        .map(|w| w.iter().copied().max().unwrap_or(0))
        .sum()
}

/// The family's features, after the other syslog features in column order.
pub(super) static AUTH_FEATURES: &[FamilyFeature<AuthAcc>] = &[
    dspec(
        "auth_failures",
        "syslog",
        "attempts",
        C,
        "Failed logins the entity logged, repeats included: sshd's `Failed <method>` (not \
         `Failed none`), dropbear, vsftpd, proftpd and su failures, and PAM's. One attempt \
         is often logged two or three times (sshd, sshd relaying PAM, pam_unix), so per \
         service (SSH, FTP, other) the most any one of them logged counts.",
        SYSLOG_NULL,
        |a| sys(a, failures(&a.fails)),
    ),
    dspec(
        "auth_pam_failures",
        "syslog",
        "attempts",
        C,
        "Authentication failures PAM reported in the entity's log: pam_unix's `authentication \
         failure` (and `N more authentication failures`) and sshd's `error: PAM:` lines, \
         repeats included. Already part of `auth_failures`.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::PamFailure)),
    ),
    dspec(
        "auth_successes",
        "syslog",
        "logins",
        C,
        "Successful logins the entity logged.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::Success)),
    ),
    dspec(
        "auth_invalid_users",
        "syslog",
        "attempts",
        C,
        "Login attempts for users that do not exist, logged by the entity.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::InvalidUser)),
    ),
    dspec(
        "sudo_failures",
        "syslog",
        "events",
        C,
        "sudo refusals after wrong passwords, logged by the entity.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::SudoFailure)),
    ),
    dspec(
        "sudo_refusals",
        "syslog",
        "events",
        C,
        "sudo refusals by policy (`user NOT in sudoers`, `command not allowed`), logged by \
         the entity.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::SudoRefused)),
    ),
    dspec(
        "sudo_commands",
        "syslog",
        "commands",
        C,
        "Commands run through sudo, logged by the entity.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds, AuthKind::Sudo)),
    ),
    dspec(
        "auth_injection_lines",
        "syslog",
        "messages",
        C,
        "Authentication lines the entity logged whose client-chosen text (a user name, a \
         reason) embeds the line's own address structure (` from A port P`, ` rhost=A`): \
         someone trying to put another host in this log. A line with more than one reading \
         blames no one.",
        SYSLOG_NULL,
        |a| sys(a, a.injections),
    ),
    dspec(
        "auth_distinct_users",
        "syslog",
        "users",
        C,
        "Distinct user names in the entity's authentication messages.",
        SYSLOG_NULL,
        |a| sys(a, a.users.len() as u64),
    ),
    dspec(
        "auth_distinct_remotes",
        "syslog",
        "hosts",
        C,
        "Distinct remote addresses in the entity's authentication messages.",
        SYSLOG_NULL,
        |a| sys(a, a.remotes.len() as u64),
    ),
    dspec(
        "auth_failure_ratio",
        "syslog",
        "ratio",
        F,
        "Failed logins over failed plus successful logins the entity logged.",
        Some("the entity logged no failed or successful login"),
        |a| {
            let f = failures(&a.fails);
            let d = f + kind_at(&a.kinds, AuthKind::Success);
            (d > 0).then(|| f as f64 / d as f64)
        },
    ),
    dspec(
        "auth_failures_as_remote",
        "syslog",
        "attempts",
        C,
        "Failed logins from the entity, as logged by the hosts it tried: the same count as \
         `auth_failures`, for the remote side (an address, or the host name a log gave).",
        SYSLOG_NULL,
        |a| sys(a, failures(&a.fails_as_remote)),
    ),
    dspec(
        "auth_pam_failures_as_remote",
        "syslog",
        "attempts",
        C,
        "PAM authentication failures naming the entity as rhost (or as sshd's `from`). \
         Already part of `auth_failures_as_remote`.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds_as_remote, AuthKind::PamFailure)),
    ),
    dspec(
        "auth_successes_as_remote",
        "syslog",
        "logins",
        C,
        "Successful logins from the entity, as logged by the hosts it logged into.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds_as_remote, AuthKind::Success)),
    ),
    dspec(
        "auth_invalid_users_as_remote",
        "syslog",
        "attempts",
        C,
        "Attempts from the entity for users that do not exist.",
        SYSLOG_NULL,
        |a| sys(a, kind_at(&a.kinds_as_remote, AuthKind::InvalidUser)),
    ),
    dspec(
        "auth_refusals_as_remote",
        "syslog",
        "events",
        C,
        "Logins from the entity the server refused or cut by policy: users not allowed, root \
         refused, too many attempts on one connection.",
        SYSLOG_NULL,
        |a| {
            let k = |x| kind_at(&a.kinds_as_remote, x);
            sys(
                a,
                k(AuthKind::NotAllowed) + k(AuthKind::RootRefused) + k(AuthKind::MaxAttempts),
            )
        },
    ),
    dspec(
        "auth_preauth_drops_as_remote",
        "syslog",
        "connections",
        C,
        "Connections from the entity that ended before any login: closed before \
         authenticating, no SSH identification sent, no common algorithm — scanners and \
         banner grabbers.",
        SYSLOG_NULL,
        |a| {
            let k = |x| kind_at(&a.kinds_as_remote, x);
            sys(
                a,
                k(AuthKind::PreauthClosed) + k(AuthKind::NoIdent) + k(AuthKind::NegotiationFailed),
            )
        },
    ),
    dspec(
        "auth_distinct_users_as_remote",
        "syslog",
        "users",
        C,
        "Distinct user names the entity tried.",
        SYSLOG_NULL,
        |a| sys(a, a.users_as_remote.len() as u64),
    ),
    dspec(
        "auth_distinct_targets_as_remote",
        "syslog",
        "hosts",
        C,
        "Distinct hosts that logged the entity's login attempts.",
        SYSLOG_NULL,
        |a| sys(a, a.reporters_as_remote.len() as u64),
    ),
];
