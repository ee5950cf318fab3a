//! SSH (RFC 4253): each side's identification string, and HASSH from its
//! KEXINIT (Salesforce's definition: MD5 of the key exchange, cipher, MAC and
//! compression algorithms it offers, client-to-server for the client and
//! server-to-client for the server). Written by hand: the banner is one line
//! and KEXINIT a run of length-prefixed lists, which no maintained crate reads
//! from captured bytes.

/// Longest identification string kept (RFC 4253 allows 255 with CR LF).
const MAX_BANNER: usize = 255;

/// The identification string: the first line starting with `SSH-` (a server
/// may send other lines before it), without its line end; and the offset of
/// the bytes after it. `None` while the line is not wholly in.
pub fn banner(data: &[u8]) -> Option<(String, usize)> {
    let mut at = 0;
    while at < data.len() {
        let end = data[at..].iter().position(|&b| b == b'\n')? + at;
        let line = &data[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"SSH-") {
            let keep = &line[..line.len().min(MAX_BANNER)];
            return Some((String::from_utf8_lossy(keep).into_owned(), end + 1));
        }
        at = end + 1;
    }
    None
}

/// Whether `data` starts like an SSH identification string.
pub fn looks_like_ssh(data: &[u8]) -> bool {
    data.starts_with(b"SSH-")
}

/// HASSH of the KEXINIT at the start of `data` (the binary packets after the
/// banner), as the client (`client` true) or the server offers it.
pub fn hassh(data: &[u8], client: bool) -> Option<String> {
    // uint32 packet_length, byte padding_length, payload: byte 20 (KEXINIT),
    // 16 bytes of cookie, then ten name-lists.
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let packet = data.get(4..4 + len)?;
    let payload = packet.get(1..)?;
    if payload.first() != Some(&20) {
        return None;
    }
    let mut rest = payload.get(17..)?;
    let mut lists = Vec::with_capacity(10);
    for _ in 0..10 {
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        lists.push(std::str::from_utf8(rest.get(4..4 + n)?).ok()?);
        rest = &rest[4 + n..];
    }
    // kex, host key, enc c2s, enc s2c, mac c2s, mac s2c, comp c2s, comp s2c, ...
    let (enc, mac, comp) = if client { (2, 4, 6) } else { (3, 5, 7) };
    Some(super::md5_hex(&format!(
        "{};{};{};{}",
        lists[0], lists[enc], lists[mac], lists[comp]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    fn kexinit(lists: [&str; 10]) -> Vec<u8> {
        let mut payload = vec![20u8];
        payload.extend_from_slice(&[0; 16]);
        for l in lists {
            payload.extend_from_slice(&(l.len() as u32).to_be_bytes());
            payload.extend_from_slice(l.as_bytes());
        }
        payload.extend_from_slice(&[0, 0, 0, 0, 0]);
        let pad = 4u8;
        let mut pkt = ((payload.len() + 1 + pad as usize) as u32)
            .to_be_bytes()
            .to_vec();
        pkt.push(pad);
        pkt.extend_from_slice(&payload);
        pkt.extend_from_slice(&[0; 4]);
        pkt
    }

    #[test]
    fn banners_after_other_lines_and_hassh() {
        let server = b"Welcome\r\nSSH-2.0-OpenSSH_8.9p1 Ubuntu-3\r\nrest";
        let (b, at) = banner(server).expect("banner");
        assert_eq!(b, "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3");
        assert_eq!(&server[at..], b"rest");
        assert_eq!(banner(b"SSH-2.0-partial"), None);
        let k = kexinit([
            "curve25519-sha256",
            "ssh-ed25519",
            "aes128-ctr",
            "aes256-ctr",
            "hmac-sha2-256",
            "hmac-sha1",
            "none",
            "zlib",
            "",
            "",
        ]);
        let c = hassh(&k, true).expect("client");
        let s = hassh(&k, false).expect("server");
        assert_eq!(
            c,
            format!(
                "{:x}",
                Md5::digest(b"curve25519-sha256;aes128-ctr;hmac-sha2-256;none")
            )
        );
        assert_ne!(c, s);
        assert_eq!(hassh(&k[..k.len() / 2], true), None, "not wholly in");
        assert_eq!(
            hassh(b"\x00\x00\x00\x05\x01\x15abcd", true),
            None,
            "not KEXINIT"
        );
    }
}
