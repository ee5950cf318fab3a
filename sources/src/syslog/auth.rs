//! What authentication messages say: who tried to log in, from where, and whether
//! it worked. The remote address becomes evidence for its own entity.
//!
//! Covered: OpenSSH (`Failed <method> for [invalid user] U from A port P`,
//! `Accepted <method> for U from A port P`, `Invalid user U from A`, and the
//! `message repeated N times: [ Failed ... ]` lines syslog daemons fold repeats
//! into), `pam_unix(<service>:auth): authentication failure; ... rhost=A user=U`,
//! and sudo (`U : N incorrect password attempts ; ... USER=T` and the successful
//! `U : TTY=... ; PWD=... ; USER=T ; COMMAND=...`).

use std::net::IpAddr;
use std::sync::OnceLock;

use amoskys_schemas::{AuthEvent, AuthKind};
use regex::Regex;

struct Patterns {
    ssh_failed: Regex,
    ssh_accepted: Regex,
    ssh_invalid: Regex,
    repeated: Regex,
    sudo_failed: Regex,
    sudo_ran: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("built-in pattern compiles");
        Patterns {
            // User names are attacker-chosen and may hold spaces or " from ": the
            // greedy user group leaves sshd's own, last " from A port P".
            ssh_failed: re(r"^Failed (\S+) for (?:invalid user |illegal user )?(.*) from (\S+)(?: port (\d+))?"),
            ssh_accepted: re(r"^Accepted (\S+) for (.*) from (\S+)(?: port (\d+))?"),
            ssh_invalid: re(r"^()(?:Invalid|Illegal) user (.*) from (\S+)(?: port (\d+))?"),
            repeated: re(r"^message repeated (\d+) times: \[ ?(.*?) ?\]$"),
            sudo_failed: re(r"^\s*(\S+) : (?:(\d+) )?incorrect password attempts?\b.*?\bUSER=(\S+)"),
            sudo_ran: re(r"^\s*(\S+) : TTY=\S+ ; PWD=.*? ; USER=(\S+) ; COMMAND="),
        }
    })
}

/// `pam_unix` authentication failures, in the forms Linux-PAM has logged them:
/// `pam_unix(sshd:auth): ...`, `pam_unix(auth): ...`, `pam_unix: ...` and the old
/// `(pam_unix) ...`, possibly in the program name (`pop(pam_unix)[4920]`). The
/// remote host is the last `rhost=` before the first `user=` that follows one:
/// user names are attacker-chosen, and `ruser=x rhost=evil` or `user=x rhost=evil`
/// must not move the blame. Returns (service, rhost, user).
fn pam_failure<'a>(
    app: Option<&str>,
    msg: &'a str,
) -> Option<(Option<String>, &'a str, Option<&'a str>)> {
    let at = msg.find("authentication failure;")?;
    let head = &msg[..at];
    if !head.contains("pam_unix") && !app.is_some_and(|a| a.contains("pam_unix")) {
        return None;
    }
    let service = head.find("pam_unix(").and_then(|i| {
        let inner = &head[i + 9..];
        let end = inner.find(')')?;
        let svc = inner[..end].split(':').next().unwrap_or("");
        (!svc.is_empty() && svc != "auth").then(|| svc.to_string())
    });
    let tail = &msg[at..];
    let rhosts: Vec<usize> = tail.match_indices(" rhost=").map(|(i, _)| i).collect();
    let first_rhost = *rhosts.first()?;
    let user_at = tail
        .match_indices(" user=")
        .map(|(i, _)| i)
        .find(|u| *u > first_rhost);
    let r = match user_at {
        Some(u) => rhosts
            .iter()
            .copied()
            .rfind(|r| *r < u)
            .unwrap_or(first_rhost),
        None => *rhosts.last().unwrap_or(&first_rhost),
    };
    let rhost = tail[r + 7..].split_whitespace().next().unwrap_or("");
    // `user=` when logged, else the requesting user `ruser=` up to that rhost.
    let user = user_at
        .map(|u| tail[u + 6..].trim())
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let ru = tail[..r].rfind(" ruser=")?;
            Some(tail[ru + 7..r].trim()).filter(|u| !u.is_empty())
        });
    Some((service, rhost, user))
}

/// Parses an address as written in logs: plain, IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
/// taken as the IPv4 address), or with brackets.
fn addr(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches(|c| c == '[' || c == ']');
    let ip: IpAddr = s.parse().ok()?;
    Some(ip.to_canonical())
}

/// The authentication fact in a message from `app`, if there is one.
pub fn auth_event(app: Option<&str>, msg: &str) -> Option<AuthEvent> {
    let p = patterns();
    let msg = msg.trim();
    let (msg, count) = match p.repeated.captures(msg) {
        Some(c) => (
            c.get(2).map_or("", |m| m.as_str()),
            c[1].parse().unwrap_or(1),
        ),
        None => (msg, 1),
    };
    let port = |c: &regex::Captures<'_>, i| c.get(i).and_then(|m| m.as_str().parse().ok());
    let text = |c: &regex::Captures<'_>, i| {
        c.get(i)
            .map(|m| m.as_str().to_string())
            .filter(|s: &String| !s.is_empty())
    };
    // The three sshd patterns share their groups: method, user, address, port.
    let sshd = [
        (&p.ssh_failed, AuthKind::Failure),
        (&p.ssh_accepted, AuthKind::Success),
        (&p.ssh_invalid, AuthKind::InvalidUser),
    ];
    for (re, kind) in sshd {
        if let Some(c) = re.captures(msg) {
            return Some(AuthEvent {
                kind,
                method: text(&c, 1),
                user: text(&c, 2),
                remote: addr(&c[3]),
                remote_host: None,
                port: port(&c, 4),
                count,
            });
        }
    }
    if let Some((service, rhost, user)) = pam_failure(app, msg) {
        let remote = addr(rhost);
        let remote_host = (remote.is_none() && !rhost.is_empty()).then(|| rhost.to_string());
        return Some(AuthEvent {
            kind: AuthKind::Failure,
            method: service,
            user: user.map(str::to_string),
            remote,
            remote_host,
            port: None,
            count,
        });
    }
    let is_sudo = app.is_some_and(|a| a == "sudo");
    if is_sudo {
        if let Some(c) = p.sudo_failed.captures(msg) {
            let n = c.get(2).and_then(|m| m.as_str().parse().ok()).unwrap_or(1);
            return Some(AuthEvent {
                kind: AuthKind::SudoFailure,
                method: Some("sudo".into()),
                user: text(&c, 1),
                remote: None,
                remote_host: None,
                port: None,
                count: n,
            });
        }
        if let Some(c) = p.sudo_ran.captures(msg) {
            return Some(AuthEvent {
                kind: AuthKind::Sudo,
                method: Some("sudo".into()),
                user: text(&c, 1),
                remote: None,
                remote_host: None,
                port: None,
                count,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(app: &str, m: &str) -> Option<AuthEvent> {
        auth_event(Some(app), m)
    }

    #[test]
    fn sshd_messages() {
        let e = ev(
            "sshd",
            "Failed password for invalid user admin from 183.62.140.253 port 38795 ssh2",
        )
        .expect("failure");
        assert_eq!(
            (e.kind, e.user.as_deref(), e.port, e.count),
            (AuthKind::Failure, Some("admin"), Some(38795), 1)
        );
        assert_eq!(e.remote, "183.62.140.253".parse().ok());
        let e = ev(
            "sshd",
            "Accepted publickey for fztu from 119.137.62.142 port 49116 ssh2",
        )
        .expect("success");
        assert_eq!(
            (e.kind, e.method.as_deref()),
            (AuthKind::Success, Some("publickey"))
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
        assert_eq!(e.remote, "66.38.192.238".parse().ok());
        assert_eq!(ev("sshd", "Connection closed by 1.2.3.4 [preauth]"), None);
        let e = ev(
            "sshd",
            "Failed password for invalid user  0101 from 5.188.10.180 port 1 ssh2",
        )
        .expect("spaced user");
        assert_eq!(
            (e.user.as_deref(), e.remote),
            (Some(" 0101"), "5.188.10.180".parse().ok())
        );
        let e = ev(
            "sshd",
            "Failed password for invalid user x from 9.9.9.9 from 5.5.5.5 port 2 ssh2",
        )
        .expect("injected");
        assert_eq!(e.remote, "5.5.5.5".parse().ok());
    }

    #[test]
    fn pam_and_sudo() {
        let e = ev("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root")
            .expect("pam");
        assert_eq!(
            (e.kind, e.method.as_deref(), e.user.as_deref()),
            (AuthKind::Failure, Some("sshd"), Some("root"))
        );
        assert_eq!(e.remote, "112.95.230.3".parse().ok());
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
        // User names cannot move the blame to another host.
        let e = ev("daemon", "pam_unix(auth): authentication failure; logname= uid=0 euid=0 tty=xxx ruser=test rhost=192.0.2.151 rhost=192.0.2.1")
            .expect("injected ruser");
        assert_eq!(e.remote, "192.0.2.1".parse().ok());
        let e = ev("daemon", "pam_unix(auth): authentication failure; logname= uid=0 euid=0 tty=xxx ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152")
            .expect("injected user");
        assert_eq!(
            (e.remote, e.user.as_deref()),
            ("192.0.2.2".parse().ok(), Some("test rhost=192.0.2.152"))
        );
        let e = ev("vsftpd", "pam_unix: authentication failure; logname= uid=0 euid=0 tty=ftp ruser=an8767 rhost=www.google.com").expect("name");
        assert_eq!(
            (e.remote, e.remote_host.as_deref()),
            (None, Some("www.google.com"))
        );
    }
}
