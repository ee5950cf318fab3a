//! Reads log lines (a file, or standard input) as the syslog source does and
//! prints, per line, the authentication kind and remote host it found (`-` for
//! none): `cargo run -p amoskys-sources --example auth_lines -- FILE`.
//! Used to measure how many of a log's authentication lines are recognised.

use std::io::Read;

fn main() {
    let mut input: Box<dyn Read> = match std::env::args().nth(1) {
        Some(path) => Box::new(std::fs::File::open(&path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(2)
        })),
        None => Box::new(std::io::stdin()),
    };
    let mut text = Vec::new();
    if let Err(e) = input.read_to_end(&mut text) {
        eprintln!("read: {e}");
        std::process::exit(2);
    }
    let now = 1_800_000_000_000_000_000;
    for line in text.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let (kind, remote) = match amoskys_sources::syslog::parse_message(line, now, None) {
            Ok(r) => match r.auth {
                Some(a) => (
                    a.kind.as_str().to_string(),
                    a.remote
                        .map(|ip| ip.to_string())
                        .or(a.remote_host)
                        .unwrap_or_else(|| "-".into()),
                ),
                None => ("-".into(), "-".into()),
            },
            Err(_) => ("unparsed".into(), "-".into()),
        };
        println!("{kind}\t{remote}");
    }
}
