//! Logins in clear-text protocols, read from both sides of a connection: FTP
//! (RFC 959: USER, PASS), SMTP AUTH (RFC 4954), POP3 (RFC 1939: USER, PASS,
//! APOP; RFC 5034: AUTH) and IMAP (RFC 9051: LOGIN, AUTHENTICATE). Each
//! attempt's outcome is taken from the server's answer to it; the user name is
//! kept, the secret never.
//!
//! FTP, SMTP and POP3 answer every command with one final reply, in order, so
//! commands and replies are paired by position; IMAP answers by tag. Only whole
//! lines count; reading stops where the connection turns to TLS.

use base64::Engine;

/// What the login exchanges of a connection said so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logins {
    /// Attempts answered by the server, refused, and accepted.
    pub attempts: u32,
    pub failures: u32,
    pub successes: u32,
    /// The user name of the latest attempt (as given: FTP and POP3 USER, APOP,
    /// IMAP LOGIN, SASL PLAIN and LOGIN decoded).
    pub user: Option<String>,
}

impl Logins {
    fn outcome(&mut self, ok: bool) {
        self.attempts += 1;
        if ok {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
    }
}

/// The protocols read here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    Ftp,
    Smtp,
    Pop3,
    Imap,
}

/// Longest user name kept.
const MAX_USER: usize = 128;

/// The complete lines of `data`, without their line ends.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data[..complete].split_inclusive(|&b| b == b'\n').map(|l| {
        let l = &l[..l.len() - 1];
        l.strip_suffix(b"\r").unwrap_or(l)
    })
}

fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER)
        .collect()
}

/// The command word (upper-cased) and the rest of a client line.
fn command(line: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut parts = line.splitn(2, |&b| b == b' ');
    let verb = parts.next().unwrap_or(&[]).to_ascii_uppercase();
    (verb, parts.next().unwrap_or(&[]))
}

fn first_word(b: &[u8]) -> &[u8] {
    b.split(|&c| c == b' ').next().unwrap_or(&[])
}

/// The final replies of an FTP or SMTP server, as 3-digit codes: multi-line
/// replies (`ddd-` … `ddd `) are one reply; FTP's preliminary 1xx replies are
/// left out, as they precede a final one to the same command.
fn final_replies(server: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut open: Option<&[u8]> = None;
    for line in lines(server) {
        let code = line.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
        let sep = line.get(3).copied();
        if let Some(o) = open {
            // Inside a multi-line reply: it ends at its code followed by a space.
            if code == Some(o) && sep != Some(b'-') {
                open = None;
                push_final(&mut out, o);
            }
            continue;
        }
        let Some(c) = code else { continue };
        if sep == Some(b'-') {
            open = Some(c);
        } else {
            push_final(&mut out, c);
        }
    }
    out
}

fn push_final(out: &mut Vec<u16>, code: &[u8]) {
    let n = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if n >= 200 {
        out.push(n);
    }
}

/// Reads the login exchanges of one connection.
pub fn read(proto: Text, client: &[u8], server: &[u8]) -> Logins {
    match proto {
        Text::Ftp => ftp(client, server),
        Text::Smtp => smtp(client, server),
        Text::Pop3 => pop3(client, server),
        Text::Imap => imap(client, server),
    }
}

fn ftp(client: &[u8], server: &[u8]) -> Logins {
    let mut out = Logins::default();
    // The first final reply is the greeting.
    let replies = final_replies(server);
    for (line, reply) in lines(client).zip(replies.iter().skip(1)) {
        let (verb, arg) = command(line);
        match (verb.as_slice(), reply) {
            (b"USER", r) => {
                out.user = Some(text(arg));
                // 230: logged in without a password; 530: refused outright.
                match r {
                    230 => out.outcome(true),
                    530 => out.outcome(false),
                    _ => {}
                }
            }
            (b"PASS", 230 | 202) => out.outcome(true),
            (b"PASS", 530 | 430) => out.outcome(false),
            (b"AUTH", 234) => break,
            _ => {}
        }
    }
    out
}

/// The user name of a SASL PLAIN initial response (authzid NUL authcid NUL
/// password): the authentication identity.
fn sasl_plain_user(b64: &[u8]) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_ascii())
        .ok()?;
    raw.split(|&b| b == 0).nth(1).map(text)
}

/// The mechanism (upper-cased) of a SASL AUTH/AUTHENTICATE command's
/// argument; the user of a PLAIN initial response goes to `user`.
fn sasl_start(arg: &[u8], user: &mut Option<String>) -> Vec<u8> {
    let mut it = arg.splitn(2, |&b| b == b' ');
    let mech = it.next().unwrap_or(&[]).to_ascii_uppercase();
    if let Some(initial) = it.next()
        && mech == b"PLAIN"
        && let Some(u) = sasl_plain_user(initial)
    {
        *user = Some(u);
    }
    mech
}

fn sasl_text(b64: &[u8]) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim_ascii())
        .ok()
        .map(|b| text(&b))
}

fn smtp(client: &[u8], server: &[u8]) -> Logins {
    let mut out = Logins::default();
    let mut replies = final_replies(server).into_iter().skip(1);
    let mut client_lines = lines(client);
    // SASL exchange in progress: the mechanism and how many responses were sent.
    let mut sasl: Option<(Vec<u8>, usize)> = None;
    while let Some(line) = client_lines.next() {
        let Some(reply) = replies.next() else { break };
        if let Some((mech, step)) = sasl.as_mut() {
            // A response to a 334 challenge; for LOGIN the first is the user.
            if mech == b"LOGIN" && *step == 0 {
                out.user = sasl_text(line).or(out.user.take());
            }
            *step += 1;
        } else {
            let (verb, arg) = command(line);
            match verb.as_slice() {
                b"AUTH" => sasl = Some((sasl_start(arg, &mut out.user), 0)),
                b"STARTTLS" if reply == 220 => break,
                b"DATA" if reply == 354 => {
                    // The message, up to the line holding a single dot, has one
                    // reply: the next one.
                    for l in client_lines.by_ref() {
                        if l == b"." {
                            break;
                        }
                    }
                    replies.next();
                    continue;
                }
                _ => {}
            }
        }
        if sasl.is_some() {
            match reply {
                334 => continue,
                235 => out.outcome(true),
                535 => out.outcome(false),
                _ => {}
            }
            sasl = None;
        }
    }
    out
}

/// Commands whose `+OK` answer is a multi-line response ending with `.`.
fn pop3_multiline(verb: &[u8], arg: &[u8]) -> bool {
    match verb {
        b"CAPA" | b"RETR" | b"TOP" => true,
        // Without arguments: LIST and UIDL list every message, AUTH the
        // mechanisms (RFC 5034 section 4).
        b"LIST" | b"UIDL" | b"AUTH" => arg.trim_ascii().is_empty(),
        _ => false,
    }
}

fn pop3(client: &[u8], server: &[u8]) -> Logins {
    let mut out = Logins::default();
    let mut server_lines = lines(server);
    // The greeting.
    if server_lines.next().is_none() {
        return out;
    }
    let mut sasl = false;
    for line in lines(client) {
        // The next status line: `+OK`, `-ERR`, or `+ ` (a SASL challenge).
        let Some(status) = server_lines.next() else {
            break;
        };
        let ok = status.starts_with(b"+OK");
        if sasl {
            if status.starts_with(b"+ ") || status == b"+" {
                continue;
            }
            out.outcome(ok);
            sasl = false;
            continue;
        }
        let (verb, arg) = command(line);
        match verb.as_slice() {
            b"USER" => out.user = Some(text(first_word(arg))),
            b"APOP" => {
                out.user = Some(text(first_word(arg)));
                out.outcome(ok);
            }
            b"PASS" => out.outcome(ok),
            b"AUTH" if !arg.trim_ascii().is_empty() => {
                sasl_start(arg, &mut out.user);
                if status.starts_with(b"+ ") || status == b"+" {
                    sasl = true;
                } else {
                    out.outcome(ok);
                }
            }
            b"STLS" if ok => break,
            _ => {}
        }
        if ok && pop3_multiline(&verb, arg) {
            for l in server_lines.by_ref() {
                if l == b"." {
                    break;
                }
            }
        }
    }
    out
}

fn imap(client: &[u8], server: &[u8]) -> Logins {
    let mut out = Logins::default();
    // Tags of the client's LOGIN and AUTHENTICATE commands, and of STARTTLS.
    let mut logins: Vec<&[u8]> = Vec::new();
    let mut starttls: Option<&[u8]> = None;
    for line in lines(client) {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (Some(tag), Some(verb)) = (parts.next(), parts.next()) else {
            continue;
        };
        let verb = verb.to_ascii_uppercase();
        let arg = parts.next().unwrap_or(&[]);
        match verb.as_slice() {
            b"LOGIN" => {
                let user = first_word(arg);
                // A quoted name; a literal ({n}) is sent on lines of its own.
                if !user.starts_with(b"{") {
                    let u = user.strip_prefix(b"\"").unwrap_or(user);
                    out.user = Some(text(u.strip_suffix(b"\"").unwrap_or(u)));
                }
                logins.push(tag);
            }
            b"AUTHENTICATE" => {
                sasl_start(arg, &mut out.user);
                logins.push(tag);
            }
            b"STARTTLS" => starttls = Some(tag),
            _ => {}
        }
    }
    for line in lines(server) {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (Some(tag), Some(status)) = (parts.next(), parts.next()) else {
            continue;
        };
        if tag == b"*" || tag == b"+" {
            continue;
        }
        let status = status.to_ascii_uppercase();
        if starttls == Some(tag) && status == b"OK" {
            break;
        }
        if let Some(i) = logins.iter().position(|t| *t == tag) {
            logins.remove(i);
            match status.as_slice() {
                b"OK" => out.outcome(true),
                b"NO" => out.outcome(false),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftp_attempts_pair_commands_with_replies() {
        let c = b"USER anonymous\r\nPASS x\r\nUSER root\r\nPASS a\r\nPASS b\r\nSYST\r\nUSER ro";
        let s = b"220-Welcome\r\n220-to\r\n220 FTP\r\n331 Password\r\n530 Login incorrect.\r\n\
                  331 Password\r\n530 Login incorrect.\r\n230 Logged in\r\n215 UNIX\r\n";
        let l = read(Text::Ftp, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (3, 2, 1));
        assert_eq!(l.user.as_deref(), Some("root"));
        // A reply not yet in counts nothing.
        let l = read(
            Text::Ftp,
            c,
            &s[..s.len() - b"230 Logged in\r\n215 UNIX\r\n".len()],
        );
        assert_eq!((l.attempts, l.failures), (2, 2));
        // Preliminary replies (150) before the final one to a transfer.
        let c = b"USER a\r\nPASS b\r\nRETR f\r\nUSER c\r\nPASS d\r\n";
        let s = b"220 x\r\n331 p\r\n230 ok\r\n150 open\r\n226 done\r\n331 p\r\n530 no\r\n";
        let l = read(Text::Ftp, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (2, 1, 1));
    }

    #[test]
    fn smtp_auth_plain_and_login() {
        // "\0alice\0secret" and "bob"
        let c = b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH LOGIN\r\nYm9i\r\ncGFzcw==\r\n\
                  MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: AUTH LOGIN\r\n\r\n535 x\r\n.\r\nQUIT\r\n";
        let s = b"220 mx ESMTP\r\n250-mx\r\n250 AUTH PLAIN LOGIN\r\n535 5.7.8 bad\r\n\
                  334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 ok\r\n250 ok\r\n250 ok\r\n\
                  354 go\r\n250 queued\r\n221 bye\r\n";
        let l = read(Text::Smtp, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (2, 1, 1));
        assert_eq!(l.user.as_deref(), Some("bob"));
        // After STARTTLS nothing is read.
        let c = b"EHLO x\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
        let s = b"220 mx\r\n250 mx\r\n220 go\r\n535 no\r\n";
        assert_eq!(read(Text::Smtp, c, s), Logins::default());
    }

    #[test]
    fn pop3_user_pass_apop_and_multiline_answers() {
        let c = b"CAPA\r\nUSER carol\r\nPASS x\r\nUSER carol\r\nPASS y\r\nLIST\r\nQUIT\r\n";
        let s = b"+OK ready\r\n+OK caps\r\nUSER\r\nSASL PLAIN\r\n.\r\n+OK\r\n-ERR [AUTH] no\r\n\
                  +OK\r\n+OK in\r\n+OK 1 msg\r\n1 120\r\n.\r\n+OK bye\r\n";
        let l = read(Text::Pop3, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (2, 1, 1));
        assert_eq!(l.user.as_deref(), Some("carol"));
        // AUTH without arguments lists the mechanisms, in lines up to a dot.
        let c = b"AUTH\r\nUSER erin\r\nPASS x\r\n";
        let s = b"+OK\r\n+OK mechanisms\r\nPLAIN\r\n.\r\n+OK\r\n+OK logged in\r\n";
        let l = read(Text::Pop3, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (1, 0, 1));
        let l = read(
            Text::Pop3,
            b"APOP dave c4c9334bac560ecc979e58001b3e22fb\r\n",
            b"+OK <1.2@x>\r\n-ERR\r\n",
        );
        assert_eq!(
            (l.attempts, l.failures, l.user.as_deref()),
            (1, 1, Some("dave"))
        );
    }

    #[test]
    fn imap_by_tag() {
        let c = b"a1 CAPABILITY\r\na2 LOGIN \"erin\" \"pw\"\r\na3 LOGIN erin pw2\r\na4 SELECT INBOX\r\n";
        let s = b"* OK IMAP4rev1\r\n* CAPABILITY IMAP4rev1\r\na1 OK done\r\na2 NO [AUTHENTICATIONFAILED] no\r\n\
                  a3 OK [CAPABILITY x] in\r\n* 3 EXISTS\r\na4 OK\r\n";
        let l = read(Text::Imap, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (2, 1, 1));
        assert_eq!(l.user.as_deref(), Some("erin"));
    }

    #[test]
    fn partial_lines_and_garbage_count_nothing() {
        for t in [Text::Ftp, Text::Smtp, Text::Pop3, Text::Imap] {
            assert_eq!(read(t, b"PASS x", b"220 x\r\n530"), Logins::default());
            assert_eq!(
                read(t, &[0xff; 64], &[0x00, b'\n', 0xff]),
                Logins::default()
            );
        }
    }
}
