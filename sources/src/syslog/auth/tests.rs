//! The catalogue, one line per form written from its writer's format string,
//! and lines that try to put another host in the log.
//!
//! (Over 600 lines: one test line per message form of the catalogue.)

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
