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
use regex::Regex;

mod sshd;
#[cfg(test)]
mod tests;

struct Catalogue {
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
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        use AuthKind::*;
        Catalogue {
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
    let mut e = sshd::read(msg)
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
