//! Logins in clear-text protocols, read from both sides of a connection: FTP
//! (RFC 959: USER, PASS), SMTP AUTH (RFC 4954), POP3 (RFC 1939: USER, PASS,
//! APOP; RFC 5034: AUTH), IMAP (RFC 9051: LOGIN, AUTHENTICATE) and Telnet
//! (RFC 854) login dialogues. Each attempt's outcome is taken from the
//! server's answer to it; the user name is kept, the secret never.
//!
//! FTP, SMTP and POP3 answer every command with one final reply, in order, so
//! commands and replies are paired by position; IMAP answers by tag. Only whole
//! lines count; reading stops where the connection turns to TLS. Telnet has no
//! protocol for logging in: `login(1)` and network devices prompt for a name
//! and a password in text, and say "Login incorrect" or let the user in; see
//! [`telnet`].
//!
//! (Over 600 lines with its tests; the five dialogues' readers are about 500,
//! kept together because they share the pairing of commands and replies.)

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
    Telnet,
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
        Text::Telnet => telnet(client, server),
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

/// The data of a Telnet side: commands (IAC, byte 255, and the command) and
/// option subnegotiations (IAC SB … IAC SE) taken out, IAC IAC read as 255.
fn telnet_data(b: &[u8]) -> Vec<u8> {
    const IAC: u8 = 255;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != IAC {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            // SB: up to IAC SE (240).
            Some(250) => match b[i + 2..].windows(2).position(|w| w == [IAC, 240]) {
                Some(at) => i += 2 + at + 2,
                None => break,
            },
            // WILL, WONT, DO, DONT name an option.
            Some(251..=254) => i += 3,
            Some(_) => i += 2,
            None => break,
        }
    }
    out
}

/// What a line of a Telnet server's text says about a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    AskUser,
    AskPassword,
    Refused,
    /// Text after a password that is neither a refusal nor a new prompt.
    Other,
}

/// Messages of refusal: util-linux, shadow and BusyBox `login` ("Login
/// incorrect"), BSD ("Login incorrect", "Permission denied"), Cisco IOS
/// ("% Login invalid", "% Authentication failed", "% Access denied", "% Bad
/// passwords", "% Bad secrets"), Juniper
/// ("Login incorrect"), Windows ("Logon failure"), and the general forms.
const REFUSALS: [&str; 12] = [
    "login incorrect",
    "login invalid",
    "invalid login",
    "login failed",
    "authentication failed",
    "authentication failure",
    "access denied",
    "permission denied",
    "logon failure",
    "incorrect password",
    "bad password",
    "bad secret",
];

fn telnet_said(line: &str, complete: bool) -> Option<Said> {
    let l = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if l.is_empty() {
        return None;
    }
    if REFUSALS.iter().any(|r| l.contains(r)) {
        return Some(Said::Refused);
    }
    // "Last login: …" after a success is not a prompt.
    if l.starts_with("last ") {
        return Some(Said::Other);
    }
    if PROMPTS[3..].iter().any(|p| l.ends_with(p)) {
        return Some(Said::AskPassword);
    }
    if PROMPTS[..3].iter().any(|p| l.ends_with(p)) || l.ends_with("user:") {
        return Some(Said::AskUser);
    }
    // A line still being written may be a refusal in the making; a shell
    // prompt is the one unfinished line that says the user is in (not a
    // Cisco message, which starts with `%`, cut after a character of it).
    (complete || l.ends_with(['$', '#', '>', '%']) && !l.starts_with('%')).then_some(Said::Other)
}

/// The lines a Telnet client typed (ended by CR LF, CR NUL, CR or LF), with
/// backspace and DEL applied; the last, unfinished one left out.
fn typed_lines(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut after_cr = false;
    for &b in data {
        match b {
            b'\r' => {
                out.push(std::mem::take(&mut line));
                after_cr = true;
                continue;
            }
            // The second byte of CR LF or CR NUL.
            b'\n' | 0 if after_cr => {}
            b'\n' => out.push(std::mem::take(&mut line)),
            0 => {}
            8 | 127 => {
                line.pop();
            }
            _ => line.push(b),
        }
        after_cr = false;
    }
    out
}

/// Words that end a prompt: each is read as a line of its own, as the answer
/// typed after it is not always echoed.
const PROMPTS: [&str; 6] = [
    "login:",
    "username:",
    "user name:",
    "password:",
    "passcode:",
    "passwd:",
];

/// Telnet logins: the server's prompts for a name and a password, paired in
/// order with the lines the client typed; after a password, a refusal or a
/// new prompt is a failure and other text (a banner, "Last login", a shell
/// prompt) a success.
fn telnet(client: &[u8], server: &[u8]) -> Logins {
    let mut out = Logins::default();
    let mut typed = typed_lines(&telnet_data(client)).into_iter();
    let mut server = String::from_utf8_lossy(&telnet_data(server)).to_lowercase();
    for p in PROMPTS {
        server = server.replace(p, &format!("{p}\n"));
    }
    // A password sent and not yet answered.
    let mut pending = false;
    let mut lines = server.split('\n').peekable();
    while let Some(line) = lines.next() {
        let complete = lines.peek().is_some();
        let Some(said) = telnet_said(line, complete) else {
            continue;
        };
        if pending {
            pending = false;
            out.outcome(said == Said::Other);
        }
        match said {
            Said::AskUser => match typed.next() {
                Some(u) => out.user = Some(text(&u)),
                None => break,
            },
            // The password is consumed, never kept.
            Said::AskPassword => match typed.next() {
                Some(_) => pending = true,
                None => break,
            },
            Said::Refused | Said::Other => {}
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
    fn telnet_prompts_and_answers() {
        // Option negotiation, a pre-login banner, two refusals (one typed with
        // a backspace), then a success with a shell prompt.
        let s = b"\xff\xfd\x18\xff\xfd\x20\xff\xfa\x18\x01\xff\xf0\r\nLinux 6.1 (host)\r\n\r\n\
                  host login: Password: \r\n\r\nLogin incorrect\r\nhost login: \
                  Password: \r\nLogin incorrect\r\nhost login: Password: \r\n\
                  Last login: Mon Dec  7 on pts/1\r\nuser@host:~$ ";
        let c = b"\xff\xfb\x18\xff\xfa\x18\x00xterm\xff\xf0root\r\nx\r\nadmin\r\ny\r\n\
                  alicx\x7fe\r\0secret\r\0";
        let l = read(Text::Telnet, c, s);
        assert_eq!((l.attempts, l.failures, l.successes), (3, 2, 1));
        assert_eq!(l.user.as_deref(), Some("alice"));
        // An answer still being written, or not yet typed, counts nothing.
        let cut = s.len()
            - b"ogin incorrect\r\nhost login: Password: \r\n\
                               Last login: Mon Dec  7 on pts/1\r\nuser@host:~$ "
                .len();
        let l = read(Text::Telnet, c, &s[..cut]);
        assert_eq!((l.attempts, l.failures), (1, 1));
        let l = read(
            Text::Telnet,
            b"root\r\n",
            b"login: Password: \r\nLogin incorrect\r\n",
        );
        assert_eq!(l.attempts, 0);
        // A device that asks for a password only, and asks again.
        let l = read(
            Text::Telnet,
            b"a\r\nb\r\n",
            b"\r\nUser Access Verification\r\n\r\nPassword: \r\nPassword: \r\n% Bad secrets\r\n",
        );
        assert_eq!((l.attempts, l.failures, l.successes), (2, 2, 0));
    }

    #[test]
    fn partial_lines_and_garbage_count_nothing() {
        for t in [Text::Ftp, Text::Smtp, Text::Pop3, Text::Imap, Text::Telnet] {
            assert_eq!(read(t, b"PASS x", b"220 x\r\n530"), Logins::default());
            assert_eq!(
                read(t, &[0xff; 64], &[0x00, b'\n', 0xff]),
                Logins::default()
            );
        }
    }
}
