//! TLS handshakes in clear: the ClientHello's SNI, ALPN and fingerprints (JA3,
//! JA4), the ServerHello's version and JA3S, and the server's certificate
//! (before TLS 1.3, which encrypts it). Records and handshake messages are read
//! with rusticata's tls-parser, certificates with its x509-parser; the
//! fingerprints are computed here, from their published definitions (JA3/JA3S:
//! Salesforce; JA4: FoxIO), since no maintained crate computes them from
//! parsed messages.

use amoskys_schemas::app::AppInfo;
use sha2::Digest;

use super::md5_hex;
use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_raw_record,
    parse_tls_server_hello_extensions,
};
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

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
/// one not wholly in. Also whether a whole record of another type follows
/// them: the handshake in clear has ended.
fn handshake_records(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut hs = Vec::new();
    while let Ok((rest, rec)) = parse_tls_raw_record(data) {
        if rec.hdr.record_type != TlsRecordType::Handshake {
            return (hs, true);
        }
        hs.extend_from_slice(rec.data);
        data = rest;
    }
    (hs, false)
}

fn handshake_bytes(data: &[u8]) -> Vec<u8> {
    handshake_records(data).0
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

/// A distinguished name as RFC 4514 writes it (and OpenSSL's RFC 2253 form,
/// which Zeek logs): the last RDN first, attributes by their short names
/// (dotted numbers where none is registered), `,` between RDNs and `+` inside
/// one, special characters escaped; a value that is not a string is `#` and
/// the hex of its DER content.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match oid2abbrev(atv.attr_type(), oid_registry()) {
                // PKCS #9 emailAddress: OpenSSL's (and so Zeek's) short name.
                Ok("Email") => out.push_str("emailAddress"),
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&atv.attr_type().to_id_string()),
            }
            out.push('=');
            match string_value(atv) {
                Some(v) => escape_value(&v, &mut out),
                None => {
                    out.push('#');
                    for b in atv.attr_value().data.iter() {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

/// An attribute's value as text, from any of the ASN.1 string types a name
/// may use: the UTF-8 and ASCII ones as they are, TeletexString (T61) as
/// Latin-1 (as OpenSSL reads it), BMPString as UTF-16; `None` for other types.
fn string_value(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    if let Ok(v) = atv.as_str() {
        return Some(v.to_string());
    }
    let any = atv.attr_value();
    let data: &[u8] = any.data;
    match any.tag() {
        Tag::T61String | Tag::VideotexString | Tag::GeneralString | Tag::GraphicString => {
            Some(data.iter().map(|&b| char::from(b)).collect())
        }
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
            Some(String::from_utf8_lossy(data).into_owned())
        }
        _ => None,
    }
}

/// RFC 4514 section 2.4: `"+,;<>\` anywhere, `#` or a space first, a space
/// last, and control characters (as `\XX`) are escaped.
fn escape_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Reads the server's certificate (the first of its chain) into `app`:
/// subject, issuer, validity and whether it names itself as its issuer.
fn certificate(der: &[u8], app: &mut AppInfo) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        app.anomalies += 1;
        return;
    };
    app.tls_subject = Some(rfc4514(cert.subject()));
    app.tls_issuer = Some(rfc4514(cert.issuer()));
    app.tls_not_before = Some(cert.validity().not_before.timestamp());
    app.tls_not_after = Some(cert.validity().not_after.timestamp());
    app.tls_self_signed = Some(cert.subject().as_raw() == cert.issuer().as_raw());
}

/// Reads the server's first flight into `app`; whether it is read: the
/// ServerHello and, where the handshake shows it, the certificate (which may
/// come in later segments than the ServerHello).
pub fn server(data: &[u8], app: &mut AppInfo) -> bool {
    let (hs, ended) = handshake_records(data);
    let Ok((mut rest, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        parse_tls_message_handshake(&hs)
    else {
        return false;
    };
    // The messages after the ServerHello: the Certificate follows it unless
    // the handshake is TLS 1.3 (encrypted from here) or resumed (a
    // ChangeCipherSpec record follows); ServerHelloDone ends the flight.
    let mut done = ended;
    while let Ok((next, msg)) = parse_tls_message_handshake(rest) {
        match msg {
            TlsMessage::Handshake(TlsMessageHandshake::Certificate(c)) => {
                if let Some(first) = c.cert_chain.first() {
                    certificate(first.data, app);
                }
                done = true;
                break;
            }
            TlsMessage::Handshake(TlsMessageHandshake::ServerDone(_)) => {
                done = true;
                break;
            }
            _ => rest = next,
        }
    }
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
    done || version == 0x0304
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
    fn distinguished_name_values_are_escaped_as_rfc_4514_says() {
        let mut out = String::new();
        escape_value("#1 Widgets, Inc; <\"x\"> + co\\ ", &mut out);
        assert_eq!(out, "\\#1 Widgets\\, Inc\\; \\<\\\"x\\\"\\> \\+ co\\\\\\ ");
        out.clear();
        escape_value(" a\u{1}b", &mut out);
        assert_eq!(out, "\\ a\\01b");
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
