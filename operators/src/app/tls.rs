//! TLS handshakes in clear: the ClientHello's SNI, ALPN and fingerprints (JA3,
//! JA4), the ServerHello's version and JA3S. Records and handshake messages
//! are read with rusticata's tls-parser; the fingerprints are computed here,
//! from their published definitions (JA3/JA3S: Salesforce; JA4: FoxIO), since
//! no maintained crate computes them from parsed messages.

use amoskys_schemas::app::AppInfo;
use sha2::Digest;

use super::md5_hex;
use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_raw_record,
    parse_tls_server_hello_extensions,
};

/// Whether `data` starts like a TLS handshake record (SSL 3.0 to TLS 1.3).
pub fn looks_like_tls(data: &[u8]) -> bool {
    data.len() >= 3 && data[0] == 0x16 && data[1] == 3 && data[2] <= 4
}

/// GREASE values (RFC 8701): 0x0a0a, 0x1a1a, … 0xfafa.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The handshake messages of the records at the start of `data`, joined (a
/// message may span records); stops at the first record of another type, or
/// one not wholly in.
fn handshake_bytes(mut data: &[u8]) -> Vec<u8> {
    let mut hs = Vec::new();
    while let Ok((rest, rec)) = parse_tls_raw_record(data) {
        if rec.hdr.record_type != TlsRecordType::Handshake {
            break;
        }
        hs.extend_from_slice(rec.data);
        data = rest;
    }
    hs
}

/// Extension types in wire order, read from the raw extension block.
fn extension_types(mut ext: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while ext.len() >= 4 {
        let t = u16::from_be_bytes([ext[0], ext[1]]);
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        out.push(t);
        ext = ext.get(4 + len..).unwrap_or(&[]);
    }
    out
}

fn version_name(v: u16) -> Option<&'static str> {
    Some(match v {
        0x0300 => "SSLv3",
        0x0301 => "TLSv10",
        0x0302 => "TLSv11",
        0x0303 => "TLSv12",
        0x0304 => "TLSv13",
        _ => return None,
    })
}

/// JA4's two characters for a version.
fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0200 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn join<T: ToString>(v: &[T], sep: &str) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

/// The first 12 hex digits of SHA-256, or twelve zeros for nothing.
fn sha256_12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the client's first flight into `app`; whether a ClientHello was found.
pub fn client(data: &[u8], app: &mut AppInfo) -> bool {
    let hs = handshake_bytes(data);
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(&hs)
    else {
        return false;
    };
    let raw_ext = ch.ext.unwrap_or(&[]);
    let types = extension_types(raw_ext);
    let exts = parse_tls_client_hello_extensions(raw_ext)
        .map(|(_, e)| e)
        .unwrap_or_else(|_| {
            app.anomalies += 1;
            Vec::new()
        });
    let (mut sni, mut alpn, mut groups, mut formats, mut sigs, mut versions) = (
        None,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for e in &exts {
        match e {
            TlsExtension::SNI(names) => {
                sni = names
                    .first()
                    .map(|(_, n)| String::from_utf8_lossy(n).into_owned());
            }
            TlsExtension::ALPN(protos) => {
                alpn = protos
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::EllipticCurves(g) => groups = g.iter().map(|g| g.0).collect(),
            TlsExtension::EcPointFormats(f) => formats = f.to_vec(),
            TlsExtension::SignatureAlgorithms(s) => sigs = s.clone(),
            TlsExtension::SupportedVersions(v) => versions = v.iter().map(|v| v.0).collect(),
            _ => {}
        }
    }
    let ciphers: Vec<u16> = ch
        .ciphers
        .iter()
        .map(|c| c.0)
        .filter(|c| !grease(*c))
        .collect();
    let ext_types: Vec<u16> = types.iter().copied().filter(|t| !grease(*t)).collect();
    let groups: Vec<u16> = groups.into_iter().filter(|g| !grease(*g)).collect();

    // JA3: version, ciphers, extensions, groups, point formats (decimal).
    let ja3 = format!(
        "{},{},{},{},{}",
        ch.version.0,
        join(&ciphers, "-"),
        join(&ext_types, "-"),
        join(&groups, "-"),
        join(&formats, "-")
    );
    app.ja3 = Some(md5_hex(&ja3));

    // JA4_a: transport, version, SNI or not, counts, ALPN's first and last.
    let best = versions
        .iter()
        .copied()
        .filter(|v| !grease(*v))
        .max()
        .unwrap_or(ch.version.0);
    let alpn_mark = match alpn.first().map(String::as_bytes) {
        None | Some([]) => "00".to_string(),
        Some(a) => {
            let (f, l) = (a[0], a[a.len() - 1]);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                format!("{}{}", f as char, l as char)
            } else {
                let hf = format!("{f:02x}");
                let hl = format!("{l:02x}");
                format!("{}{}", &hf[..1], &hl[1..])
            }
        }
    };
    let ja4_a = format!(
        "t{}{}{:02}{:02}{}",
        ja4_version(best),
        if types.contains(&0) { 'd' } else { 'i' },
        ciphers.len().min(99),
        ext_types.len().min(99),
        alpn_mark
    );
    let hex4 = |v: &[u16]| {
        v.iter()
            .map(|x| format!("{x:04x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut sorted_ciphers = ciphers.clone();
    sorted_ciphers.sort_unstable();
    let mut sorted_exts: Vec<u16> = ext_types
        .iter()
        .copied()
        .filter(|t| *t != 0 && *t != 16)
        .collect();
    sorted_exts.sort_unstable();
    let ja4_c_text = if sigs.is_empty() {
        hex4(&sorted_exts)
    } else {
        format!("{}_{}", hex4(&sorted_exts), hex4(&sigs))
    };
    let ja4_c = if sorted_exts.is_empty() {
        "000000000000".to_string()
    } else {
        sha256_12(&ja4_c_text)
    };
    app.ja4 = Some(format!(
        "{ja4_a}_{}_{ja4_c}",
        sha256_12(&hex4(&sorted_ciphers))
    ));
    app.tls_sni = sni;
    app.tls_alpn = (!alpn.is_empty()).then(|| alpn.join(","));
    if app.tls_version.is_none() {
        app.tls_version = version_name(best);
    }
    true
}

/// Reads the server's first flight into `app`; whether a ServerHello was found.
pub fn server(data: &[u8], app: &mut AppInfo) -> bool {
    let hs = handshake_bytes(data);
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        parse_tls_message_handshake(&hs)
    else {
        return false;
    };
    let raw_ext = sh.ext.unwrap_or(&[]);
    let types = extension_types(raw_ext);
    let mut version = sh.version.0;
    if let Ok((_, exts)) = parse_tls_server_hello_extensions(raw_ext) {
        for e in exts {
            if let TlsExtension::SupportedVersions(v) = e
                && let Some(v) = v.first()
            {
                version = v.0;
            }
        }
    }
    let ja3s = format!("{},{},{}", sh.version.0, sh.cipher.0, join(&types, "-"));
    app.ja3s = Some(md5_hex(&ja3s));
    app.tls_version = version_name(version).or(app.tls_version);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        assert!(grease(0x0a0a) && grease(0xfafa) && grease(0x3a3a));
        assert!(!grease(0x0a1a) && !grease(0x0000) && !grease(0x1301));
    }

    #[test]
    fn truncated_and_foreign_data_give_nothing() {
        let mut a = AppInfo::default();
        assert!(!client(b"", &mut a));
        assert!(!client(&[0x16, 3, 1, 0, 200, 1, 0], &mut a));
        assert!(!server(b"SSH-2.0-x\r\n", &mut a));
        assert_eq!(a, AppInfo::default());
    }
}
