//! sshd's authentication lines: forms whose address follows text the client
//! chose, read at every place their address structure occurs (the module above
//! says why).

use std::sync::OnceLock;

use amoskys_schemas::{AuthEvent, AuthKind};
use regex::{Captures, Regex};

use super::{addr, blame, host_name, re};

/// One form whose address follows client-chosen text.
struct Form {
    name: &'static str,
    kind: AuthKind,
    /// From the start of the message to where the client-chosen text (or the
    /// structure, when `user` is false) begins. Group 1, if any, is the method.
    head: Regex,
    /// Client-chosen text (the user) lies between the head and the structure.
    user: bool,
    /// The structure that carries the address: group 1 the address, group 2
    /// (optional) the port.
    structure: &'static Regex,
    /// What follows the structure, whole.
    tail: Regex,
    /// The tail may itself hold client-chosen text (a reason, an `info`).
    free_tail: bool,
    /// The address may be a host name (sshd with `UseDNS`, PAM's rhost).
    names: bool,
}

/// Whether client-chosen text (the user) lies between a form's head and its
/// address structure.
#[derive(Clone, Copy, PartialEq)]
enum Text {
    User,
    None,
}

/// Whether a form's tail may hold client-chosen text too (sshd's `info`).
#[derive(Clone, Copy, PartialEq)]
enum Tail {
    Strict,
    Free,
}

/// Whether the address may be logged as a host name (`UseDNS`).
#[derive(Clone, Copy, PartialEq)]
enum Hosts {
    Ip,
    Names,
}

/// The structures that carry the address: group 1 the address, group 2 the port.
#[derive(Clone, Copy)]
enum Structure {
    /// ` from A port P`
    FromPort,
    /// ` from A[ port P]`
    From,
    /// ` A port P`
    AddrPort,
    /// ` A[ port P]`
    AddrOptPort,
}

impl Structure {
    fn regex(self) -> &'static Regex {
        static R: OnceLock<[Regex; 4]> = OnceLock::new();
        let r = R.get_or_init(|| {
            [
                re(r" from (\S+) port (\d+)"),
                re(r" from (\S+?)(?: port (\d+))?(?:\s|$)"),
                re(r" (\S+) port (\d+)"),
                re(r" (\S+?)(?: port (\d+))?(?:\s|$)"),
            ]
        });
        &r[self as usize]
    }
}

/// One row of the catalogue: form, kind, head, client text before the address,
/// structure, tail, client text in the tail, host names.
type Row = (
    &'static str,
    AuthKind,
    &'static str,
    Text,
    Structure,
    &'static str,
    Tail,
    Hosts,
);

use AuthKind::*;
use Structure::*;

/// The forms, in the order they are tried (`Failed none` before `Failed`).
/// Methods are sshd's own words; the user is the client's.
const FORMS: &[Row] = &[
    (
        "sshd_failed_none",
        Failure,
        r"^Failed (none) for (?:invalid user |illegal user )?",
        Text::User,
        FromPort,
        r"(?s)^(?:[ :].*)?$",
        Tail::Free,
        Hosts::Ip,
    ),
    (
        "sshd_failed",
        Failure,
        r"^Failed (\S+) for (?:invalid user |illegal user )?",
        Text::User,
        From,
        r"(?s)^(?:[ :].*)?$",
        Tail::Free,
        Hosts::Names,
    ),
    (
        "sshd_accepted",
        Success,
        r"^Accepted (\S+) for ",
        Text::User,
        From,
        r"(?s)^(?:[ :].*)?$",
        Tail::Free,
        Hosts::Names,
    ),
    (
        "sshd_invalid_user",
        InvalidUser,
        r"^(?:Invalid|Illegal) user ",
        Text::User,
        From,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Names,
    ),
    (
        "sshd_not_allowed",
        NotAllowed,
        r"^User ",
        Text::User,
        From,
        r"^ ?not allowed because [^\r\n]*$",
        Tail::Strict,
        Hosts::Names,
    ),
    (
        "sshd_root_refused",
        RootRefused,
        r"^ROOT LOGIN REFUSED FROM",
        Text::None,
        AddrOptPort,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Names,
    ),
    (
        "sshd_max_attempts",
        MaxAttempts,
        r"^(?:error: )?maximum authentication attempts exceeded for (?:invalid user |illegal user )?",
        Text::User,
        FromPort,
        r"^(?: ssh[12])?(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_too_many",
        MaxAttempts,
        r"^Disconnecting (?:authenticating|invalid) user ",
        Text::User,
        AddrPort,
        r"^: Too many authentication failures(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_preauth_closed",
        PreauthClosed,
        r"^(?:Connection (?:closed|reset) by|Disconnected from) (?:authenticating|invalid) user ",
        Text::User,
        AddrPort,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_preauth_closed",
        PreauthClosed,
        r"^Connection (?:closed|reset) by",
        Text::None,
        AddrOptPort,
        r"^ \[preauth\]$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_no_ident",
        NoIdent,
        r"^Did not receive identification string",
        Text::None,
        From,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Names,
    ),
    (
        "sshd_no_ident",
        NoIdent,
        r"^(?:error: )?(?:kex_exchange_identification: )?banner exchange: Connection",
        Text::None,
        FromPort,
        r"^: invalid format(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_no_ident",
        NoIdent,
        r"^Bad protocol version identification ",
        Text::User,
        From,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Names,
    ),
    (
        "sshd_negotiation",
        NegotiationFailed,
        r"^(?:fatal: )?Unable to negotiate with",
        Text::None,
        AddrPort,
        r"(?s)^: no matching .*$",
        Tail::Strict,
        Hosts::Ip,
    ),
    (
        "sshd_pam_error",
        PamFailure,
        r"^error: PAM: (?:Authentication failure|authentication error|User not known to the underlying authentication module) for (?:illegal user |invalid user )?",
        Text::User,
        From,
        r"^(?: \[preauth\])?$",
        Tail::Strict,
        Hosts::Names,
    ),
];

fn forms() -> &'static [Form] {
    static F: OnceLock<Vec<Form>> = OnceLock::new();
    F.get_or_init(|| {
        FORMS
            .iter()
            .map(
                |&(name, kind, head, text, structure, tail, free, hosts)| Form {
                    name,
                    kind,
                    head: re(head),
                    user: text == Text::User,
                    structure: structure.regex(),
                    tail: re(tail),
                    free_tail: free == Tail::Free,
                    names: hosts == Hosts::Names,
                },
            )
            .collect()
    })
}

/// The first sshd form `msg` is written in, read.
pub(super) fn read(msg: &str) -> Option<AuthEvent> {
    forms().iter().find_map(|f| read_form(f, msg))
}

/// Reads `msg` as `form`: None when it is not that form.
fn read_form(form: &Form, msg: &str) -> Option<AuthEvent> {
    let h = form.head.captures(msg)?;
    let head_end = h.get(0)?.end();
    let body = &msg[head_end..];
    // Every place the structure occurs (an address may end where the next
    // structure's leading space begins, so the search restarts after it).
    let mut found: Vec<(usize, Captures<'_>, usize)> = Vec::new();
    let mut pos = 0;
    while let Some(c) = form.structure.captures_at(body, pos) {
        let m = c.get(0)?;
        // `from` may end with the whitespace after the address: the tail
        // starts right after the address (or the port).
        let end = c.get(2).or(c.get(1)).map_or(m.end(), |g| g.end());
        // Every structure starts with a space: the next search starts inside
        // this match, so a word of the client's (` from from A`, ` x port A`)
        // cannot hide the structure that follows it.
        pos = m.start() + 1;
        let a = c.get(1).map_or("", |g| g.as_str());
        if addr(a).is_some() || form.names && host_name(a) {
            found.push((m.start(), c, end));
        }
    }
    let occurrences = found.len();
    if !form.free_tail {
        // sshd's own text follows: only the last structure can be its.
        found.drain(..occurrences.saturating_sub(1));
    }
    let readings: Vec<(usize, Captures<'_>)> = found
        .into_iter()
        .filter(|(start, _, end)| (form.user || *start == 0) && form.tail.is_match(&body[*end..]))
        .map(|(start, c, _)| (start, c))
        .collect();
    if readings.is_empty() {
        return None;
    }
    let mut e = AuthEvent::new(form.kind, form.name);
    e.service = Some("sshd".into());
    e.method = h.get(1).map(|m| m.as_str().to_string());
    e.injection = occurrences > 1;
    // Strict tails leave one reading; a tail that may hold client text too can
    // leave several, and then the line cannot say who connected.
    let certain = readings.len() == 1;
    let (start, c) = &readings[readings.len() - 1];
    if form.user {
        e.user = Some(body[..*start].to_string()).filter(|u| !u.is_empty());
    }
    if certain {
        blame(&mut e, c.get(1).map_or("", |g| g.as_str()), form.names);
        e.port = c.get(2).and_then(|p| p.as_str().parse().ok());
    } else {
        e.user = None;
    }
    Some(e)
}
