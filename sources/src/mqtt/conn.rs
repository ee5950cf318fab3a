//! The MQTT 3.1.1 and 5 clients (rumqttc has an API for each) behind one
//! [`Connection`] the source drives.

use super::*;

/// What the connection produced, whichever protocol version.
pub(super) enum Incoming<P> {
    Connected {
        session_present: bool,
    },
    Message {
        topic: String,
        payload: Bytes,
        dup: bool,
        token: P,
    },
    Other,
}

/// The part of a rumqttc client and event loop this source uses, for 3.1.1 and 5.
pub(super) trait Connection {
    type Token;
    async fn next(&mut self) -> Result<Incoming<Self::Token>, String>;
    /// Whether events already read from the network are waiting.
    fn buffered(&self) -> bool;
    fn ack(&self, t: &Self::Token) -> Result<(), String>;
    fn subscribe(&self, topics: &[String], qos: u8) -> Result<(), String>;
    fn disconnect(&self);
}

pub(super) mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};

    pub struct Conn(pub AsyncClient, pub EventLoop);

    pub fn connect(s: &MqttSource, cap: usize) -> Conn {
        let c = &s.cfg;
        let mut o = MqttOptions::new(s.client_id(), c.broker.host.clone(), c.broker.port);
        o.set_keep_alive(c.keep_alive)
            .set_clean_session(c.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(c.max_payload_bytes + 64 * 1024, 64 * 1024)
            .set_inflight(u16::try_from(c.batch_size.clamp(10, 1000)).unwrap_or(100));
        if let Some(u) = &c.username {
            o.set_credentials(u.clone(), s.password.clone().unwrap_or_default());
        }
        if let Some((ca, client)) = &s.tls {
            o.set_transport(Transport::tls(ca.clone(), client.clone(), None));
        }
        let (client, ev) = AsyncClient::new(o, cap);
        Conn(client, ev)
    }

    fn qos(q: u8) -> QoS {
        if q == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    impl Connection for Conn {
        type Token = Publish;
        async fn next(&mut self) -> Result<Incoming<Publish>, String> {
            match self.1.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                    session_present: a.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    dup: p.dup,
                    token: p,
                }),
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(e.to_string()),
            }
        }
        fn buffered(&self) -> bool {
            !self.1.state.events.is_empty()
        }
        fn ack(&self, t: &Publish) -> Result<(), String> {
            self.0.try_ack(t).map_err(|e| e.to_string())
        }
        fn subscribe(&self, topics: &[String], q: u8) -> Result<(), String> {
            let f = topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos(q)));
            self.0.try_subscribe_many(f).map_err(|e| e.to_string())
        }
        fn disconnect(&self) {
            let _ = self.0.try_disconnect();
        }
    }
}

pub(super) mod v5 {
    use super::*;
    use rumqttc::Transport;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub struct Conn(pub AsyncClient, pub EventLoop);

    pub fn connect(s: &MqttSource, cap: usize) -> Conn {
        let c = &s.cfg;
        let mut o = MqttOptions::new(s.client_id(), c.broker.host.clone(), c.broker.port);
        o.set_keep_alive(c.keep_alive)
            .set_clean_start(c.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(u32::try_from(c.max_payload_bytes + 64 * 1024).ok());
        if !c.clean_session {
            o.set_session_expiry_interval(Some(
                u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ));
        }
        if let Some(u) = &c.username {
            o.set_credentials(u.clone(), s.password.clone().unwrap_or_default());
        }
        if let Some((ca, client)) = &s.tls {
            o.set_transport(Transport::tls(ca.clone(), client.clone(), None));
        }
        let (client, ev) = AsyncClient::new(o, cap);
        Conn(client, ev)
    }

    impl Connection for Conn {
        type Token = Publish;
        async fn next(&mut self) -> Result<Incoming<Publish>, String> {
            match self.1.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                    session_present: a.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.clone(),
                    dup: p.dup,
                    token: p,
                }),
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(e.to_string()),
            }
        }
        fn buffered(&self) -> bool {
            !self.1.state.events.is_empty()
        }
        fn ack(&self, t: &Publish) -> Result<(), String> {
            self.0.try_ack(t).map_err(|e| e.to_string())
        }
        fn subscribe(&self, topics: &[String], q: u8) -> Result<(), String> {
            let qos = if q == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let f = topics.iter().map(|t| Filter::new(t.clone(), qos));
            self.0.try_subscribe_many(f).map_err(|e| e.to_string())
        }
        fn disconnect(&self) {
            let _ = self.0.try_disconnect();
        }
    }
}
