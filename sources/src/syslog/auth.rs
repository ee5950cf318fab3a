//! What authentication messages say: who tried to log in, from where, and whether
//! it worked. The remote address becomes evidence for its own entity.
//!
//! The catalogue follows the format strings of the programs that write these
//! lines, so a line is read the way its writer built it:
//!
//! | form | writer's format | kind |
//! |---|---|---|
//! | `sshd_failed` | `Failed %s for [invalid user ]%s from %s port %d ssh2[: %s]` (auth.c) | failure |
//! | `sshd_failed_none` | the same with method `none`: a client asking which methods exist | failure, not counted as a guess |
//! | `sshd_accepted` | `Accepted %s for %s from %s port %d ssh2[: %s]` | success |
//! | `sshd_invalid_user` | `Invalid user %s from %s[ port %d]` (auth.c getpwnamallow) | invalid_user |
//! | `sshd_not_allowed` | `User %s from %s not allowed because %s` (auth.c allowed_user) | not_allowed |
//! | `sshd_root_refused` | `ROOT LOGIN REFUSED FROM %s[ port %d]` | root_refused |
//! | `sshd_max_attempts` | `maximum authentication attempts exceeded for [invalid user ]%s from %s port %d ssh2` | max_attempts |
//! | `sshd_too_many` | `Disconnecting (authenticating\|invalid) user %s %s port %d: Too many authentication failures` | max_attempts |
//! | `sshd_preauth_closed` | `Connection (closed\|reset) by [(authenticating\|invalid) user %s ]%s port %d [preauth]`, `Disconnected from (authenticating\|invalid) user %s %s port %d [preauth]` | preauth_closed |
//! | `sshd_no_ident` | `Did not receive identification string from %s[ port %d]`, `banner exchange: Connection from %s port %d: invalid format`, `Bad protocol version identification '%s' from %s[ port %d]` | no_ident |
//! | `sshd_negotiation` | `Unable to negotiate with %s port %d: no matching %s found.` | negotiation_failed |
//! | `sshd_pam_error` | `error: PAM: %s for [illegal user ]%s from %s` (auth-pam.c): sshd relaying PAM's verdict | pam_failure |
//! | `pam_unix_failure` | `authentication failure; logname=%s uid=%d euid=%d tty=%s ruser=%s rhost=%s [user=%s]` (pam_unix support.c) | pam_failure |
//! | `pam_unix_more` | `%d more authentication failure%s; logname=... rhost=%s [user=%s]` | pam_failure, count N |
//! | `dropbear_failed`, `dropbear_invalid_user`, `dropbear_max_attempts`, `dropbear_accepted` | `Bad password attempt for '%s' from %s:%d`, `Login attempt for nonexistent user [%s ]from %s:%d`, `Max auth tries reached - user '%s' from %s:%d`, `(Password\|Pubkey) auth succeeded for '%s' ... from %s:%d` | |
//! | `vsftpd_failed`, `vsftpd_accepted` | `[%s] FAIL LOGIN: Client "%s"`, `[%s] OK LOGIN: Client "%s"` | failure, success |
//! | `proftpd_failed`, `proftpd_invalid_user`, `proftpd_max_attempts`, `proftpd_accepted` | `%s (%s[%s]) - USER %s (Login failed): %s`, `... - USER %s: no such user found from ...`, `... - Maximum login attempts (%d) exceeded`, `... - USER %s: Login successful.` | |
//! | `su_failed` | `FAILED SU (to %s) %s on %s` | failure |
//! | `sudo_failed`, `sudo_refused`, `sudo_ran` | `%s : %d incorrect password attempt(s) ; ...`, `%s : (user NOT in sudoers\|command not allowed) ; ...`, `%s : TTY=%s ; PWD=%s ; USER=%s ; COMMAND=%s` | sudo_failure, sudo_refused, sudo |
//!
//! Syslog daemons' `message repeated N times: [ ... ]` counts N attempts, and
//! Solaris' `[ID 800047 auth.info]` prefix is skipped.
//!
//! **Client-chosen text.** User names (and the reasons or extra text some
//! versions print after the port) are chosen by the client, so they may embed
//! the very structure that carries the address (` from A port P`, ` rhost=A`). A
//! line is therefore read by trying every place the structure occurs: a reading
//! is valid when the text before it fits the format's head and the text after
//! fits its tail. One valid reading is certain; several mean the line cannot say
//! who connected, so no one is blamed and the line is marked `injection`, as it
//! is whenever the structure occurs more than once.

use std::net::IpAddr;
use std::sync::OnceLock;

use amoskys_schemas::{AuthEvent, AuthKind};
use regex::{Captures, Regex};

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
    service: &'static str,
    /// The address may be a host name (sshd with `UseDNS`, PAM's rhost).
    names: bool,
}

struct Catalogue {
    forms: Vec<Form>,
    repeated: Regex,
    solaris: Regex,
    pam_more: Regex,
    pam_tag: Regex,
    dropbear: Vec<(Regex, AuthKind, &'static str)>,
    vsftpd: Regex,
    proftpd: Regex,
    su_failed: Regex,
    sudo_failed: Regex,
    sudo_refused: Regex,
    sudo_ran: Regex,
    auditd: Regex,
}

/// The most retries one PAM handle is given (sshd's MaxAuthTries, pam_unix's
/// retry option are single digits); `N more authentication failures` above it
/// is not believed.
const MAX_PAM_RETRIES: u32 = 100;

fn re(s: &str) -> Regex {
    Regex::new(s).expect("built-in pattern compiles")
}

fn catalogue() -> &'static Catalogue {
    static FROM_PORT: OnceLock<Regex> = OnceLock::new();
    static FROM: OnceLock<Regex> = OnceLock::new();
    static ADDR_PORT: OnceLock<Regex> = OnceLock::new();
    static ADDR: OnceLock<Regex> = OnceLock::new();
    static C: OnceLock<Catalogue> = OnceLock::new();
    let from_port = FROM_PORT.get_or_init(|| re(r" from (\S+) port (\d+)"));
    let from = FROM.get_or_init(|| re(r" from (\S+?)(?: port (\d+))?(?:\s|$)"));
    let addr_port = ADDR_PORT.get_or_init(|| re(r" (\S+) port (\d+)"));
    let addr_opt_port = ADDR.get_or_init(|| re(r" (\S+?)(?: port (\d+))?(?:\s|$)"));
    C.get_or_init(|| {
        let form = |name, kind, head: &str, user, structure, tail: &str, free_tail, names| Form {
            name,
            kind,
            head: re(head),
            user,
            structure,
            tail: re(tail),
            free_tail,
            service: "sshd",
            names,
        };
        use AuthKind::*;
        let forms = vec![
            // Methods are sshd's own words; the user is the client's.
            form(
                "sshd_failed_none",
                Failure,
                r"^Failed (none) for (?:invalid user |illegal user )?",
                true,
                from_port,
                r"(?s)^(?:[ :].*)?$",
                true,
                false,
            ),
            form(
                "sshd_failed",
                Failure,
                r"^Failed (\S+) for (?:invalid user |illegal user )?",
                true,
                from,
                r"(?s)^(?:[ :].*)?$",
                true,
                true,
            ),
            form(
                "sshd_accepted",
                Success,
                r"^Accepted (\S+) for ",
                true,
                from,
                r"(?s)^(?:[ :].*)?$",
                true,
                true,
            ),
            form(
                "sshd_invalid_user",
                InvalidUser,
                r"^(?:Invalid|Illegal) user ",
                true,
                from,
                r"^(?: \[preauth\])?$",
                false,
                true,
            ),
            form(
                "sshd_not_allowed",
                NotAllowed,
                r"^User ",
                true,
                from,
                r"^ ?not allowed because [^\r\n]*$",
                false,
                true,
            ),
            form(
                "sshd_root_refused",
                RootRefused,
                r"^ROOT LOGIN REFUSED FROM",
                false,
                addr_opt_port,
                r"^(?: \[preauth\])?$",
                false,
                true,
            ),
            form(
                "sshd_max_attempts",
                MaxAttempts,
                r"^(?:error: )?maximum authentication attempts exceeded for (?:invalid user |illegal user )?",
                true,
                from_port,
                r"^(?: ssh[12])?(?: \[preauth\])?$",
                false,
                false,
            ),
            form(
                "sshd_too_many",
                MaxAttempts,
                r"^Disconnecting (?:authenticating|invalid) user ",
                true,
                addr_port,
                r"^: Too many authentication failures(?: \[preauth\])?$",
                false,
                false,
            ),
            form(
                "sshd_preauth_closed",
                PreauthClosed,
                r"^(?:Connection (?:closed|reset) by|Disconnected from) (?:authenticating|invalid) user ",
                true,
                addr_port,
                r"^(?: \[preauth\])?$",
                false,
                false,
            ),
            form(
                "sshd_preauth_closed",
                PreauthClosed,
                r"^Connection (?:closed|reset) by",
                false,
                addr_opt_port,
                r"^ \[preauth\]$",
                false,
                false,
            ),
            form(
                "sshd_no_ident",
                NoIdent,
                r"^Did not receive identification string",
                false,
                from,
                r"^(?: \[preauth\])?$",
                false,
                true,
            ),
            form(
                "sshd_no_ident",
                NoIdent,
                r"^(?:error: )?(?:kex_exchange_identification: )?banner exchange: Connection",
                false,
                from_port,
                r"^: invalid format(?: \[preauth\])?$",
                false,
                false,
            ),
            form(
                "sshd_no_ident",
                NoIdent,
                r"^Bad protocol version identification ",
                true,
                from,
                r"^(?: \[preauth\])?$",
                false,
                true,
            ),
            form(
                "sshd_negotiation",
                NegotiationFailed,
                r"^(?:fatal: )?Unable to negotiate with",
                false,
                addr_port,
                r"(?s)^: no matching .*$",
                false,
                false,
            ),
            form(
                "sshd_pam_error",
                PamFailure,
                r"^error: PAM: (?:Authentication failure|authentication error|User not known to the underlying authentication module) for (?:illegal user |invalid user )?",
                true,
                from,
                r"^(?: \[preauth\])?$",
                false,
                true,
            ),
        ];
        Catalogue {
            forms,
            repeated: re(r"(?s)^message repeated (\d+) times: \[ ?(.*?) ?\]$"),
            solaris: re(r"^\[ID \d+ [a-z0-9]+\.[a-z]+\] "),
            pam_more: re(r"^PAM (\d+) more authentication failures?;"),
            pam_tag: re(r"^(?:pam_unix(?:\([\w.@-]*(?::\w+)?\))?:|\(pam_unix\)) ?$"),
            dropbear: vec![
                (
                    re(r"(?s)^Bad password attempt for '(.*)' from (\S+):(\d+)$"),
                    Failure,
                    "dropbear_failed",
                ),
                (
                    re(r"(?s)^Login attempt for nonexistent user (?:'(.*)' )?from (\S+):(\d+)$"),
                    InvalidUser,
                    "dropbear_invalid_user",
                ),
                (
                    re(r"(?s)^Max auth tries reached - user '(.*)' from (\S+):(\d+)$"),
                    MaxAttempts,
                    "dropbear_max_attempts",
                ),
                (
                    re(r"(?s)^(?:Password|Pubkey) auth succeeded for '(.*)' (?:with key .* )?from (\S+):(\d+)$"),
                    Success,
                    "dropbear_accepted",
                ),
            ],
            vsftpd: re(r#"(?s)^(?:\[pid \d+\] )?\[(.*)\] (FAIL|OK) LOGIN: Client "([^"]*)"$"#),
            proftpd: re(r"(?s)^\S+ \((\S*)\[([0-9A-Fa-f:.]+)\]\) - (.*)$"),
            su_failed: re(r"(?s)^FAILED (?:SU \(to (\S+)\) (.*) on (\S+)|su for (\S+) by (.*))$"),
            sudo_failed: re(r"(?s)^\s*(\S+) : (?:(\d+) )?incorrect password attempts?\b.*?\bUSER=(\S+)"),
            sudo_refused: re(r"(?s)^\s*(\S+) : (?:user NOT in sudoers|user NOT authorized on host|command not allowed) ; "),
            sudo_ran: re(r"(?s)^\s*(\S+) : (?:TTY=\S+ ; )?PWD=.*? ; USER=(\S+) ; COMMAND="),
            auditd: re(r#"^(?:node=\S+ )?type=(USER_AUTH|USER_LOGIN) msg=audit\([^)]*\): .*?\bop=(\S+) .*?\bacct=("[^"]*"|[0-9A-Fa-f]+) exe="([^"]*)" hostname=(\S+) addr=(\S+) terminal=\S+ res=(success|failed)"#),
        }
    })
}

/// Parses an address as written in logs: plain, IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
/// taken as the IPv4 address), or with brackets.
fn addr(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches(|c| c == '[' || c == ']');
    let ip: IpAddr = s.parse().ok()?;
    Some(ip.to_canonical())
}

/// A host name as resolvers write them (what `UseDNS` and PAM's rhost may log):
/// dotted, so a bare word of the text (`from from`) is never taken for one.
fn host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.contains('.')
        && !s.starts_with('.')
}

/// Sets `remote` or `remote_host` from the text of an address field.
fn blame(e: &mut AuthEvent, text: &str, names: bool) -> bool {
    if let Some(ip) = addr(text) {
        e.remote = Some(ip);
        true
    } else if names && host_name(text) {
        e.remote_host = Some(text.to_string());
        true
    } else {
        false
    }
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
    e.service = Some(form.service.to_string());
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

/// `pam_unix` failures, in the forms Linux-PAM has logged them:
/// `pam_unix(sshd:auth): ...`, `pam_unix(auth): ...`, `pam_unix: ...` and the old
/// `(pam_unix) ...`, possibly in the program name (`pop(pam_unix)[4920]`), and
/// `PAM N more authentication failures; ...`. The format ends `... ruser=%s
/// rhost=%s [user=%s]`: the host is read at a ` rhost=` whose value is followed by
/// the end or by `user=`. `ruser` (set by some services to the client's name) and
/// `user` are client-chosen and may hold a second ` rhost=`; an empty `ruser`
/// (sshd leaves it so) makes the first one certain, and one place that fits the
/// format is certain too. Any other line with several is ambiguous.
fn pam_failure(app: Option<&str>, msg: &str) -> Option<AuthEvent> {
    let c = catalogue();
    let (at, count, form) = if let Some(m) = c.pam_more.captures(msg) {
        // pam_unix counts one handle's retries, a handful: a larger number is
        // no count of attempts.
        let n: u32 = m[1].parse().ok().filter(|n| *n <= MAX_PAM_RETRIES)?;
        (0, n.max(1), "pam_unix_more")
    } else {
        let i = msg.find("authentication failure;")?;
        (i, 1, "pam_unix_failure")
    };
    // The line must be pam_unix's own: its tag opens the message (or is the
    // program), never words further in, which another program's client may
    // have chosen.
    let head = &msg[..at];
    let pam_named = form == "pam_unix_more"
        || c.pam_tag.is_match(head)
        || head.trim().is_empty() && app.is_some_and(|a| a.contains("pam_unix"));
    if !pam_named {
        return None;
    }
    let service = head
        .find("pam_unix(")
        .and_then(|i| {
            let inner = &head[i + 9..];
            let end = inner.find(')')?;
            let svc = inner[..end].split(':').next().unwrap_or("");
            (!svc.is_empty() && svc != "auth").then(|| svc.to_string())
        })
        .or_else(|| app.map(|a| a.split('(').next().unwrap_or(a).to_string()))
        .filter(|s| !s.is_empty());
    let tail = &msg[at..];
    let mut e = AuthEvent::new(AuthKind::PamFailure, form);
    e.count = count;
    e.method = service.clone();
    e.service = service;
    let rhosts: Vec<usize> = tail.match_indices(" rhost=").map(|(i, _)| i).collect();
    let value = |r: usize| {
        let v = &tail[r + 7..];
        &v[..v.find(char::is_whitespace).unwrap_or(v.len())]
    };
    // What follows the value: nothing, or `user=` (after one or two spaces).
    let fits = |r: usize| {
        let after = tail[r + 7 + value(r).len()..].trim_start();
        after.is_empty() || after.starts_with("user=")
    };
    let chosen = match rhosts.as_slice() {
        [] => None,
        [one] => Some(*one),
        [first, ..] => {
            e.injection = true;
            let fitting: Vec<usize> = rhosts.iter().copied().filter(|r| fits(*r)).collect();
            // sshd leaves ruser empty and lets the client choose only the user,
            // which comes last: there the first rhost is sshd's.
            let sshd = e.service.as_deref() == Some("sshd");
            if sshd && tail[..*first].ends_with(" ruser=") && fits(*first) {
                Some(*first)
            } else if let [one] = fitting.as_slice() {
                Some(*one)
            } else {
                None
            }
        }
    };
    if let Some(r) = chosen {
        let v = value(r);
        if !v.is_empty() {
            blame(&mut e, v, true);
        }
        let after = &tail[r + 7 + v.len()..];
        e.user = after
            .find("user=")
            .map(|u| after[u + 5..].trim().to_string())
            .filter(|u| !u.is_empty())
            .or_else(|| {
                let ru = tail[..r].rfind(" ruser=")?;
                Some(tail[ru + 7..r].trim().to_string()).filter(|u| !u.is_empty())
            });
    }
    Some(e)
}

/// dropbear's lines: the address is the last `from A:P`, nothing follows it.
fn dropbear(msg: &str) -> Option<AuthEvent> {
    for (re, kind, form) in &catalogue().dropbear {
        if let Some(c) = re.captures(msg) {
            let mut e = AuthEvent::new(*kind, form);
            e.service = Some("dropbear".into());
            e.user = c.get(1).map(|m| m.as_str().to_string());
            e.injection = msg.matches(" from ").count() > 1;
            blame(&mut e, &c[2], false);
            e.port = c[3].parse().ok();
            return Some(e);
        }
    }
    None
}

/// vsftpd's `[user] FAIL LOGIN: Client "A"`: the user (client-chosen) comes
/// first, the address last, so the last `Client "A"` is certain.
fn vsftpd(msg: &str) -> Option<AuthEvent> {
    let c = catalogue().vsftpd.captures(msg)?;
    let kind = if &c[2] == "OK" {
        AuthKind::Success
    } else {
        AuthKind::Failure
    };
    let mut e = AuthEvent::new(
        kind,
        if kind == AuthKind::Success {
            "vsftpd_accepted"
        } else {
            "vsftpd_failed"
        },
    );
    e.service = Some("vsftpd".into());
    e.user = Some(c[1].to_string()).filter(|u| !u.is_empty());
    e.injection = msg.matches("LOGIN: Client \"").count() > 1;
    blame(&mut e, &c[3], true);
    Some(e)
}

/// proftpd's session prefix `server (name[A]) - ` comes before anything the
/// client chose, so its address is certain.
fn proftpd(msg: &str) -> Option<AuthEvent> {
    let c = catalogue().proftpd.captures(msg)?;
    let rest = c.get(3)?.as_str();
    let (kind, form, user) = if let Some(u) = rest.strip_prefix("USER ") {
        if let Some(i) = u.rfind(" (Login failed):") {
            (AuthKind::Failure, "proftpd_failed", Some(&u[..i]))
        } else if let Some(i) = u.rfind(": no such user found from ") {
            (AuthKind::InvalidUser, "proftpd_invalid_user", Some(&u[..i]))
        } else if let Some(i) = u.rfind(": Login successful") {
            (AuthKind::Success, "proftpd_accepted", Some(&u[..i]))
        } else {
            return None;
        }
    } else if rest.starts_with("Maximum login attempts (") {
        (AuthKind::MaxAttempts, "proftpd_max_attempts", None)
    } else {
        return None;
    };
    let mut e = AuthEvent::new(kind, form);
    e.service = Some("proftpd".into());
    e.user = user.map(str::to_string).filter(|u| !u.is_empty());
    blame(&mut e, &c[2], false);
    Some(e)
}

/// The kernel audit records PAM and sshd write (`type=USER_AUTH`,
/// `type=USER_LOGIN`), as auditd or audisp forward them. Their untrusted
/// strings are quoted or hex-encoded, so the first `addr=` is certain.
fn auditd(msg: &str) -> Option<AuthEvent> {
    let c = catalogue().auditd.captures(msg)?;
    let failed = &c[7] == "failed";
    let (kind, form) = match (&c[1], failed) {
        ("USER_AUTH", true) => (AuthKind::PamFailure, "auditd_user_auth"),
        ("USER_LOGIN", true) => (AuthKind::Failure, "auditd_user_login"),
        ("USER_LOGIN", false) => (AuthKind::Success, "auditd_user_login"),
        _ => return None,
    };
    let mut e = AuthEvent::new(kind, form);
    let exe = &c[4];
    e.service = Some(exe.rsplit('/').next().unwrap_or(exe).to_string());
    let acct = &c[3];
    e.user = match acct.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
        Some(a) => Some(a.to_string()),
        None => (0..acct.len() / 2)
            .map(|i| u8::from_str_radix(acct.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    };
    if !blame(&mut e, &c[6], false) && &c[5] != "?" {
        blame(&mut e, &c[5], true);
    }
    Some(e)
}

fn sudo(msg: &str) -> Option<AuthEvent> {
    let c = catalogue();
    let ev = |kind, form, user: &str| {
        let mut e = AuthEvent::new(kind, form);
        e.service = Some("sudo".into());
        e.method = Some("sudo".into());
        e.user = Some(user.to_string());
        e
    };
    if let Some(m) = c.sudo_failed.captures(msg) {
        let mut e = ev(AuthKind::SudoFailure, "sudo_failed", &m[1]);
        e.count = m.get(2).and_then(|n| n.as_str().parse().ok()).unwrap_or(1);
        return Some(e);
    }
    if let Some(m) = c.sudo_refused.captures(msg) {
        return Some(ev(AuthKind::SudoRefused, "sudo_refused", &m[1]));
    }
    let m = c.sudo_ran.captures(msg)?;
    Some(ev(AuthKind::Sudo, "sudo_ran", &m[1]))
}

/// The authentication fact in a message from `app`, if there is one.
pub fn auth_event(app: Option<&str>, msg: &str) -> Option<AuthEvent> {
    let c = catalogue();
    let mut msg = msg.trim_matches(|ch: char| ch == ' ' || ch == '\t');
    if let Some(m) = c.solaris.find(msg) {
        msg = &msg[m.end()..];
    }
    let (msg, count) = match c.repeated.captures(msg) {
        Some(r) => (
            r.get(2).map_or("", |m| m.as_str()),
            r[1].parse().unwrap_or(1),
        ),
        None => (msg, 1),
    };
    let app_base = app.map(|a| a.split(['[', '(']).next().unwrap_or(a));
    let mut e = c
        .forms
        .iter()
        .find_map(|f| read_form(f, msg))
        .or_else(|| pam_failure(app, msg))
        .or_else(|| dropbear(msg))
        .or_else(|| vsftpd(msg))
        .or_else(|| proftpd(msg))
        .or_else(|| auditd(msg))
        .or_else(|| {
            let m = c.su_failed.captures(msg)?;
            let mut e = AuthEvent::new(AuthKind::Failure, "su_failed");
            e.service = Some("su".into());
            e.method = Some("su".into());
            e.user = m.get(2).or(m.get(5)).map(|u| u.as_str().to_string());
            Some(e)
        })
        .or_else(|| app_base.filter(|a| *a == "sudo").and_then(|_| sudo(msg)))?;
    e.count = e.count.saturating_mul(count).max(1);
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(app: &str, m: &str) -> Option<AuthEvent> {
        auth_event(Some(app), m)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    /// (kind, form, user, remote, port) of a line.
    fn read(
        app: &str,
        m: &str,
    ) -> (
        AuthKind,
        &'static str,
        Option<String>,
        Option<IpAddr>,
        Option<u16>,
    ) {
        let e = ev(app, m).unwrap_or_else(|| panic!("not recognised: {m:?}"));
        (e.kind, e.form, e.user, e.remote, e.port)
    }

    #[test]
    fn sshd_messages() {
        let e = ev(
            "sshd",
            "Failed password for invalid user admin from 183.62.140.253 port 38795 ssh2",
        )
        .expect("failure");
        assert_eq!(
            (e.kind, e.user.as_deref(), e.port, e.count, e.injection),
            (AuthKind::Failure, Some("admin"), Some(38795), 1, false)
        );
        assert_eq!(e.remote, ip("183.62.140.253"));
        let e = ev(
            "sshd",
            "Accepted publickey for fztu from 119.137.62.142 port 49116 ssh2: RSA SHA256:abcdEF+/12",
        )
        .expect("success");
        assert_eq!(
            (e.kind, e.method.as_deref(), e.remote),
            (AuthKind::Success, Some("publickey"), ip("119.137.62.142"))
        );
        let e = ev("sshd", "Invalid user webmaster from 173.234.31.186").expect("invalid");
        assert_eq!(
            (e.kind, e.user.as_deref(), e.port),
            (AuthKind::InvalidUser, Some("webmaster"), None)
        );
        let e = ev(
            "sshd",
            "message repeated 5 times: [ Failed password for root from 5.36.59.76 port 42393 ssh2]",
        )
        .expect("repeat");
        assert_eq!((e.kind, e.count), (AuthKind::Failure, 5));
        let e = ev("sshd", "Illegal user test from ::ffff:66.38.192.238").expect("mapped");
        assert_eq!(e.remote, ip("66.38.192.238"));
        let e = ev(
            "sshd",
            "Failed password for invalid user  0101 from 5.188.10.180 port 1 ssh2",
        )
        .expect("spaced user");
        assert_eq!(
            (e.user.as_deref(), e.remote),
            (Some(" 0101"), ip("5.188.10.180"))
        );
        // sshd with UseDNS logs a name: kept as the remote host.
        let e = ev(
            "sshd",
            "Failed password for root from host-7.example.net port 22 ssh2",
        )
        .expect("name");
        assert_eq!(
            (e.remote, e.remote_host.as_deref()),
            (None, Some("host-7.example.net"))
        );
    }

    /// One line per form, written from its writer's format string.
    #[test]
    fn every_form_of_the_catalogue() {
        use AuthKind::*;
        let a = ip("198.51.100.7");
        let v6 = ip("2001:db8::7");
        // (program, line, kind, form, user, remote, port)
        type Case<'a> = (
            &'a str,
            &'a str,
            AuthKind,
            &'a str,
            Option<&'a str>,
            Option<IpAddr>,
            Option<u16>,
        );
        let cases: &[Case<'_>] = &[
            (
                "sshd",
                "Failed none for invalid user guest from 198.51.100.7 port 5022 ssh2",
                Failure,
                "sshd_failed_none",
                Some("guest"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Failed keyboard-interactive/pam for root from 2001:db8::7 port 5022 ssh2",
                Failure,
                "sshd_failed",
                Some("root"),
                v6,
                Some(5022),
            ),
            (
                "sshd",
                "Failed publickey for git from 198.51.100.7 port 5022 ssh2: ED25519 SHA256:Zm9vYmFy",
                Failure,
                "sshd_failed",
                Some("git"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Failed password for root from 198.51.100.7 port 5022",
                Failure,
                "sshd_failed",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Invalid user oracle from 198.51.100.7 port 5022",
                InvalidUser,
                "sshd_invalid_user",
                Some("oracle"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "User bin from 198.51.100.7 not allowed because not listed in AllowUsers",
                NotAllowed,
                "sshd_not_allowed",
                Some("bin"),
                a,
                None,
            ),
            (
                "sshd",
                "User nobody from 2001:db8::7 not allowed because shell /usr/sbin/nologin does not exist",
                NotAllowed,
                "sshd_not_allowed",
                Some("nobody"),
                v6,
                None,
            ),
            (
                "sshd",
                "ROOT LOGIN REFUSED FROM 198.51.100.7 port 5022",
                RootRefused,
                "sshd_root_refused",
                None,
                a,
                Some(5022),
            ),
            (
                "sshd",
                "ROOT LOGIN REFUSED FROM 198.51.100.7",
                RootRefused,
                "sshd_root_refused",
                None,
                a,
                None,
            ),
            (
                "sshd",
                "error: maximum authentication attempts exceeded for invalid user admin from 198.51.100.7 port 5022 ssh2 [preauth]",
                MaxAttempts,
                "sshd_max_attempts",
                Some("admin"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Disconnecting authenticating user root 198.51.100.7 port 5022: Too many authentication failures [preauth]",
                MaxAttempts,
                "sshd_too_many",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Disconnecting invalid user admin 2001:db8::7 port 5022: Too many authentication failures",
                MaxAttempts,
                "sshd_too_many",
                Some("admin"),
                v6,
                Some(5022),
            ),
            (
                "sshd",
                "Connection closed by authenticating user root 198.51.100.7 port 5022 [preauth]",
                PreauthClosed,
                "sshd_preauth_closed",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Connection reset by invalid user test 198.51.100.7 port 5022 [preauth]",
                PreauthClosed,
                "sshd_preauth_closed",
                Some("test"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Disconnected from invalid user test 2001:db8::7 port 5022 [preauth]",
                PreauthClosed,
                "sshd_preauth_closed",
                Some("test"),
                v6,
                Some(5022),
            ),
            (
                "sshd",
                "Connection closed by 198.51.100.7 port 5022 [preauth]",
                PreauthClosed,
                "sshd_preauth_closed",
                None,
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Connection closed by 198.51.100.7 [preauth]",
                PreauthClosed,
                "sshd_preauth_closed",
                None,
                a,
                None,
            ),
            (
                "sshd",
                "Did not receive identification string from 198.51.100.7 port 5022",
                NoIdent,
                "sshd_no_ident",
                None,
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Did not receive identification string from 198.51.100.7",
                NoIdent,
                "sshd_no_ident",
                None,
                a,
                None,
            ),
            (
                "sshd",
                "error: kex_exchange_identification: banner exchange: Connection from 198.51.100.7 port 5022: invalid format",
                NoIdent,
                "sshd_no_ident",
                None,
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Bad protocol version identification 'GET / HTTP/1.1' from 198.51.100.7 port 5022",
                NoIdent,
                "sshd_no_ident",
                Some("'GET / HTTP/1.1'"),
                a,
                Some(5022),
            ),
            (
                "sshd",
                "Unable to negotiate with 198.51.100.7 port 5022: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",
                NegotiationFailed,
                "sshd_negotiation",
                None,
                a,
                Some(5022),
            ),
            (
                "sshd",
                "error: PAM: Authentication failure for illegal user admin from 198.51.100.7",
                PamFailure,
                "sshd_pam_error",
                Some("admin"),
                a,
                None,
            ),
            (
                "sshd",
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.7  user=root",
                PamFailure,
                "pam_unix_failure",
                Some("root"),
                a,
                None,
            ),
            (
                "sshd",
                "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.7  user=root",
                PamFailure,
                "pam_unix_more",
                Some("root"),
                a,
                None,
            ),
            (
                "sshd",
                "PAM 1 more authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.7 ",
                PamFailure,
                "pam_unix_more",
                None,
                a,
                None,
            ),
            (
                "dropbear",
                "Bad password attempt for 'root' from 198.51.100.7:5022",
                Failure,
                "dropbear_failed",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "dropbear",
                "Login attempt for nonexistent user from 198.51.100.7:5022",
                InvalidUser,
                "dropbear_invalid_user",
                None,
                a,
                Some(5022),
            ),
            (
                "dropbear",
                "Max auth tries reached - user 'root' from 198.51.100.7:5022",
                MaxAttempts,
                "dropbear_max_attempts",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "dropbear",
                "Password auth succeeded for 'root' from 198.51.100.7:5022",
                Success,
                "dropbear_accepted",
                Some("root"),
                a,
                Some(5022),
            ),
            (
                "vsftpd",
                "[ftpuser] FAIL LOGIN: Client \"::ffff:198.51.100.7\"",
                Failure,
                "vsftpd_failed",
                Some("ftpuser"),
                a,
                None,
            ),
            (
                "vsftpd",
                "[pid 4242] [ftpuser] OK LOGIN: Client \"198.51.100.7\"",
                Success,
                "vsftpd_accepted",
                Some("ftpuser"),
                a,
                None,
            ),
            (
                "proftpd",
                "ftp.example.org (client.example.net[198.51.100.7]) - USER bob (Login failed): Incorrect password",
                Failure,
                "proftpd_failed",
                Some("bob"),
                a,
                None,
            ),
            (
                "proftpd",
                "ftp.example.org (198.51.100.7[198.51.100.7]) - USER nosuch: no such user found from 198.51.100.7 [198.51.100.7] to 192.0.2.1:21",
                InvalidUser,
                "proftpd_invalid_user",
                Some("nosuch"),
                a,
                None,
            ),
            (
                "proftpd",
                "ftp.example.org (198.51.100.7[198.51.100.7]) - Maximum login attempts (3) exceeded, connection refused",
                MaxAttempts,
                "proftpd_max_attempts",
                None,
                a,
                None,
            ),
            (
                "su",
                "FAILED SU (to root) alice on pts/0",
                Failure,
                "su_failed",
                Some("alice"),
                None,
                None,
            ),
            (
                "sudo",
                "alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh",
                SudoRefused,
                "sudo_refused",
                Some("alice"),
                None,
                None,
            ),
            (
                "sudo",
                "alice : command not allowed ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh",
                SudoRefused,
                "sudo_refused",
                Some("alice"),
                None,
                None,
            ),
            (
                "auditd",
                "type=USER_AUTH msg=audit(1700000000.123:456): pid=4242 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" hostname=198.51.100.7 addr=198.51.100.7 terminal=ssh res=failed'",
                PamFailure,
                "auditd_user_auth",
                Some("root"),
                a,
                None,
            ),
            (
                "auditd",
                "type=USER_LOGIN msg=audit(1700000000.123:457): pid=4242 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=? addr=2001:db8::7 terminal=sshd res=failed'",
                Failure,
                "auditd_user_login",
                Some("(invalid user)"),
                v6,
                None,
            ),
            (
                "sshd",
                "[ID 800047 auth.info] Failed password for root from 198.51.100.7 port 5022 ssh2",
                Failure,
                "sshd_failed",
                Some("root"),
                a,
                Some(5022),
            ),
        ];
        for (app, line, kind, form, user, remote, port) in cases {
            let got = read(app, line);
            assert_eq!(
                got,
                (*kind, *form, user.map(str::to_string), *remote, *port),
                "{line}"
            );
        }
        // The pam_unix form with the user unknown carries no user and no remote.
        let e = ev("sshd", "pam_unix(sshd:auth): check pass; user unknown");
        assert!(e.is_none() || e.is_some_and(|e| e.remote.is_none()));
    }

    /// Client-chosen text that embeds the address structure never moves the blame
    /// to a host the client did not connect from.
    #[test]
    fn client_text_cannot_frame_another_host() {
        let real = "203.0.113.5";
        for (app, line) in [
            // user names before the address: the format puts sshd's text last,
            // so the last structure whose tail fits is the one sshd wrote.
            (
                "sshd",
                "Invalid user x from 6.6.6.6 port 1 from 203.0.113.5 port 22",
            ),
            ("sshd", "Invalid user x from 2001:db8::66 from 203.0.113.5"),
            (
                "sshd",
                "User x from 6.6.6.6 from 203.0.113.5 not allowed because not listed in AllowUsers",
            ),
            (
                "sshd",
                "Connection closed by authenticating user x 6.6.6.6 port 1 203.0.113.5 port 22 [preauth]",
            ),
            (
                "sshd",
                "maximum authentication attempts exceeded for x from 6.6.6.6 port 1 ssh2 from 203.0.113.5 port 22 ssh2",
            ),
            (
                "sshd",
                "error: PAM: Authentication failure for x from 6.6.6.6 from 203.0.113.5",
            ),
            (
                "vsftpd",
                "[x] FAIL LOGIN: Client \"6.6.6.6\"] FAIL LOGIN: Client \"203.0.113.5\"",
            ),
            (
                "dropbear",
                "Bad password attempt for 'x' from 6.6.6.6:1' from 203.0.113.5:22",
            ),
        ] {
            let e = ev(app, line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(e.remote, ip(real), "{line}");
            assert!(e.injection, "{line}");
        }
        // Where text after the port may be the client's too (sshd's info part),
        // two structures leave two readings: no one is blamed.
        for line in [
            "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 203.0.113.5 port 22 ssh2",
            "Failed password for root from 203.0.113.5 port 22 ssh2 from 6.6.6.6 port 1 ssh2",
            "Failed password for root from 203.0.113.5 port 22 ssh1: ruser x from 6.6.6.6 port 1 ssh2",
            "Accepted password for x from 2001:db8::66 port 1 ssh2 from 203.0.113.5 port 22 ssh2",
            "Failed password for x rhost=6.6.6.6 from 6.6.6.6 port 1 ssh2 from 203.0.113.5 port 22 ssh2",
        ] {
            let e = ev("sshd", line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!((e.remote, e.remote_host.as_deref()), (None, None), "{line}");
            assert!(e.injection, "{line}");
        }
        // A word of the client's where the address would be does not hide it.
        for line in [
            "Failed password for invalid user x from from 203.0.113.5 port 22 ssh2",
            "Invalid user x from from 203.0.113.5 port 22",
            "Disconnecting invalid user a x port 203.0.113.5 port 22: Too many authentication failures",
            "Connection closed by invalid user a x port 203.0.113.5 port 22 [preauth]",
        ] {
            let e = ev("sshd", line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!((e.remote, e.remote_host), (ip(real), None), "{line}");
        }
        // A client-chosen ruser that fakes an empty one (vsftpd puts the FTP
        // user name there) blames no one.
        let e = ev("vsftpd", "pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=a ruser= rhost=6.6.6.6 user=y rhost=203.0.113.5  user=a ruser= rhost=6.6.6.6 user=y")
            .expect("spoofed ruser");
        assert_eq!((e.remote, e.injection), (None, true));
        // PAM's and the audit trail's words inside another program's line are
        // the client's, not PAM's.
        for line in [
            "Received disconnect from 203.0.113.5 port 53722:11: pam_unix authentication failure; rhost=6.6.6.6 [preauth]",
            "Received disconnect from 203.0.113.5 port 53722:11: PAM 400 more authentication failures; rhost=6.6.6.6 [preauth]",
            "Received disconnect from 203.0.113.5 port 53722:11: type=USER_LOGIN msg=audit(0): op=login acct=\"r\" exe=\"/usr/sbin/sshd\" hostname=? addr=6.6.6.6 terminal=ssh res=failed",
        ] {
            assert_eq!(ev("sshd", line), None, "{line}");
        }
        assert_eq!(
            ev(
                "sshd",
                "PAM 4000000 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=6.6.6.6"
            ),
            None
        );
        // A newline is no ` from `: the one structure is sshd's.
        let e = ev(
            "sshd",
            "Failed password for x\nfrom 6.6.6.6 port 1 ssh2\n from 203.0.113.5 port 22 ssh2",
        )
        .expect("newline");
        assert_eq!((e.remote, e.injection), (ip(real), false));
        // Newlines and control characters in a user name are the user's.
        let e = ev(
            "sshd",
            "Failed password for invalid user a\nb\x1b[0m from 2001:db8::5 port 22 ssh2",
        )
        .expect("control characters");
        assert_eq!(
            (e.remote, e.user.as_deref(), e.injection),
            (ip("2001:db8::5"), Some("a\nb\x1b[0m"), false)
        );
        // PAM: one rhost is certain; of several, the first behind an empty
        // ruser (sshd's), or the only one the format fits.
        let e = ev("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152")
            .expect("injected user");
        assert_eq!(
            (e.remote, e.user.as_deref(), e.injection),
            (ip("192.0.2.2"), Some("test rhost=192.0.2.152"), true)
        );
        // A value followed by anything but `user=` is no rhost of the format.
        let e = ev("daemon", "pam_unix(auth): authentication failure; logname= uid=0 euid=0 tty=xxx ruser=test rhost=192.0.2.151 rhost=192.0.2.1")
            .expect("injected ruser");
        assert_eq!((e.remote, e.injection), (ip("192.0.2.1"), true));
        // A client-chosen ruser and user both fit: two readings, no one blamed.
        let e = ev("vsftpd", "pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=x rhost=192.0.2.151 user=y rhost=192.0.2.1")
            .expect("two readings");
        assert_eq!((e.remote, e.remote_host, e.injection), (None, None, true));
        // An empty rhost is no host, and never the next field.
        let e = ev("sudo", "pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/0 ruser=alice rhost=  user=alice")
            .expect("local");
        assert_eq!(
            (e.remote, e.remote_host, e.user.as_deref()),
            (None, None, Some("alice"))
        );
    }

    #[test]
    fn pam_and_sudo() {
        let e = ev("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root")
            .expect("pam");
        assert_eq!(
            (e.kind, e.method.as_deref(), e.user.as_deref()),
            (AuthKind::PamFailure, Some("sshd"), Some("root"))
        );
        assert_eq!(e.remote, ip("112.95.230.3"));
        let e = ev("sudo", "   alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls")
            .expect("sudo failure");
        assert_eq!(
            (e.kind, e.user.as_deref(), e.count),
            (AuthKind::SudoFailure, Some("alice"), 3)
        );
        let e = ev(
            "sudo",
            "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        )
        .expect("sudo");
        assert_eq!(e.kind, AuthKind::Sudo);
        assert_eq!(
            ev("cron", "alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/x"),
            None
        );
        let e = ev("vsftpd", "pam_unix: authentication failure; logname= uid=0 euid=0 tty=ftp ruser=an8767 rhost=www.google.com").expect("name");
        assert_eq!(
            (e.remote, e.remote_host.as_deref(), e.service.as_deref()),
            (None, Some("www.google.com"), Some("vsftpd"))
        );
    }
}
