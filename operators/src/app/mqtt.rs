//! MQTT 3.1, 3.1.1 and 5 on the wire: the client's CONNECT (version, client
//! identifier, user name — never the password), the server's CONNACK code,
//! the first PUBLISH's topic and QoS, and protocol violations counted. Read by
//! hand: MQTT codecs are written for clients and stop at the first error,
//! where a sensor must count the error and read on (OASIS MQTT 3.1.1 §2-3,
//! MQTT 5.0 §2-3).

use amoskys_schemas::app::AppInfo;

/// What a side's bytes gave: packets read and violations met.
pub struct Side {
    pub packets: u32,
    pub violations: u32,
    /// Whether the bytes end inside a packet (more may come).
    pub partial: bool,
}

/// The remaining-length varint: value and bytes it took; `None` when cut
/// short, `Some(Err)` when longer than four bytes (a violation).
fn varint(d: &[u8]) -> Option<Result<(usize, usize), ()>> {
    let mut v = 0usize;
    for (i, &b) in d.iter().enumerate().take(4) {
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(Ok((v, i + 1)));
        }
    }
    if d.len() >= 4 { Some(Err(())) } else { None }
}

/// A length-prefixed UTF-8 string at the start of `d`, and the rest.
fn string(d: &[u8]) -> Option<(String, &[u8])> {
    let n = usize::from(u16::from_be_bytes([*d.first()?, *d.get(1)?]));
    let s = d.get(2..2 + n)?;
    Some((String::from_utf8_lossy(s).into_owned(), &d[2 + n..]))
}

/// Skips MQTT 5 properties: their varint length, then that many bytes.
fn skip_properties(d: &[u8]) -> Option<&[u8]> {
    let Ok((n, k)) = varint(d)? else {
        return None;
    };
    d.get(k + n..)
}

/// Reads the packets of one side (`client`: the side that connected).
pub fn read(data: &[u8], client: bool, app: &mut AppInfo) -> Side {
    let mut side = Side {
        packets: 0,
        violations: 0,
        partial: false,
    };
    let mut d = data;
    while !d.is_empty() {
        let (kind, flags) = (d[0] >> 4, d[0] & 0x0f);
        let (len, k) = match varint(&d[1..]) {
            None => {
                side.partial = true;
                break;
            }
            Some(Err(())) => {
                side.violations += 1;
                break;
            }
            Some(Ok(x)) => x,
        };
        let Some(body) = d.get(1 + k..1 + k + len) else {
            side.partial = true;
            break;
        };
        d = &d[1 + k + len..];
        if client && side.packets == 0 && kind != 1 {
            // Anything before CONNECT.
            side.violations += 1;
        }
        side.packets += 1;
        let v5 = app.mqtt_version == Some(5);
        match kind {
            0 => side.violations += 1,
            15 if !v5 => side.violations += 1,
            1 if client && connect(body, app).is_none() => side.violations += 1,
            2 if !client => match body.get(1) {
                Some(&code) if app.mqtt_connack.is_none() => app.mqtt_connack = Some(code),
                Some(_) => {}
                None => side.violations += 1,
            },
            3 => {
                let qos = (flags >> 1) & 3;
                if qos == 3 {
                    side.violations += 1;
                } else if app.mqtt_topic.is_none() {
                    match string(body) {
                        Some((topic, _)) => {
                            app.mqtt_topic = Some(topic);
                            app.mqtt_qos = Some(qos);
                        }
                        None => side.violations += 1,
                    }
                }
            }
            // PUBREL, SUBSCRIBE and UNSUBSCRIBE have fixed flags 0010.
            6 | 8 | 10 if flags != 2 => side.violations += 1,
            _ => {}
        }
    }
    side
}

/// CONNECT: protocol name and level, flags, keep-alive, (properties,) client
/// identifier, (will,) user name.
fn connect(body: &[u8], app: &mut AppInfo) -> Option<()> {
    let (name, rest) = string(body)?;
    if name != "MQTT" && name != "MQIsdp" {
        return None;
    }
    let level = *rest.first()?;
    let flags = *rest.get(1)?;
    let mut rest = rest.get(4..)?;
    app.mqtt_version = Some(level);
    if level == 5 {
        rest = skip_properties(rest)?;
    }
    let (client_id, mut rest) = string(rest)?;
    app.mqtt_client_id = Some(client_id);
    if flags & 0x04 != 0 {
        if level == 5 {
            rest = skip_properties(rest)?;
        }
        let (_, r) = string(rest)?; // will topic
        let (_, r) = string(r)?; // will payload (binary, length-prefixed alike)
        rest = r;
    }
    if flags & 0x80 != 0 {
        let (user, _) = string(rest)?;
        app.mqtt_username = Some(user);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind_flags: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![kind_flags, body.len() as u8];
        p.extend_from_slice(body);
        p
    }

    fn s(v: &str) -> Vec<u8> {
        let mut out = (v.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(v.as_bytes());
        out
    }

    #[test]
    fn connect_connack_publish_and_violations() {
        let mut body = s("MQTT");
        body.extend_from_slice(&[4, 0xc2, 0, 60]);
        body.extend(s("sensor-1"));
        body.extend(s("alice"));
        body.extend(s("secret"));
        let mut client = packet(0x10, &body);
        let mut publish = s("plant/temp");
        publish.extend_from_slice(&[0, 1]);
        publish.extend_from_slice(b"21.5");
        client.extend(packet(0x32, &publish));
        client.extend(packet(0x36, &s("x"))); // QoS 3
        let mut app = AppInfo::default();
        let c = read(&client, true, &mut app);
        assert_eq!((c.packets, c.violations, c.partial), (3, 1, false));
        assert_eq!(app.mqtt_version, Some(4));
        assert_eq!(app.mqtt_client_id.as_deref(), Some("sensor-1"));
        assert_eq!(app.mqtt_username.as_deref(), Some("alice"));
        assert_eq!(
            (app.mqtt_topic.as_deref(), app.mqtt_qos),
            (Some("plant/temp"), Some(1))
        );
        let sv = read(&packet(0x20, &[0, 5]), false, &mut app);
        assert_eq!((sv.packets, sv.violations), (1, 0));
        assert_eq!(app.mqtt_connack, Some(5), "not authorised");
    }

    #[test]
    fn broken_streams_are_counted_not_trusted() {
        let mut app = AppInfo::default();
        // PUBLISH before CONNECT, then a packet type 0.
        let mut d = packet(0x30, &s("t"));
        d.extend(packet(0x00, &[]));
        let r = read(&d, true, &mut app);
        assert_eq!(r.violations, 2);
        // A remaining length past the bytes: partial, nothing read.
        let r = read(&[0x10, 0x7f, 0, 4], true, &mut app);
        assert!(r.partial);
        // A length of five varint bytes.
        let r = read(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01], true, &mut app);
        assert_eq!(r.violations, 1);
        // A CONNECT whose lengths run past its body.
        let r = read(
            &packet(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x80, 0, 10, 0, 9]),
            true,
            &mut app,
        );
        assert_eq!(r.violations, 1);
    }
}
