//! What a flow carries at the application layer, read from the first bytes of
//! each direction: the protocol (by content, not port) and the fields of its
//! first exchange. Columns of the `flows` table (docs/APPLICATION.md).

/// Application metadata of one flow. Every field is optional: a flow without
/// payload, or whose protocol is not recognised, has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfo {
    /// `http`, `tls`, `ssh`, `smtp`, `ftp`, `pop3`, `imap` or `mqtt`.
    pub protocol: Option<&'static str>,
    pub http_method: Option<String>,
    pub http_host: Option<String>,
    pub http_uri: Option<String>,
    pub http_user_agent: Option<String>,
    pub http_status: Option<u16>,
    pub http_content_type: Option<String>,
    pub http_content_length: Option<u64>,
    /// TLS version negotiated (the server's choice), else offered:
    /// `TLSv10` … `TLSv13`, `SSLv3`.
    pub tls_version: Option<&'static str>,
    pub tls_sni: Option<String>,
    /// ALPN protocols the client offered, comma-separated, in its order.
    pub tls_alpn: Option<String>,
    pub ja3: Option<String>,
    pub ja3s: Option<String>,
    pub ja4: Option<String>,
    /// The server certificate (the first of the chain, where the handshake is
    /// in clear): subject and issuer as RFC 4514 strings, validity in seconds
    /// since the epoch, and whether the issuer is the subject itself.
    pub tls_subject: Option<String>,
    pub tls_issuer: Option<String>,
    pub tls_not_before: Option<i64>,
    pub tls_not_after: Option<i64>,
    pub tls_self_signed: Option<bool>,
    /// SSH identification strings (without the line end).
    pub ssh_client: Option<String>,
    pub ssh_server: Option<String>,
    pub hassh: Option<String>,
    pub hassh_server: Option<String>,
    /// MQTT: the CONNECT's protocol level (3: 3.1, 4: 3.1.1, 5: 5.0), client
    /// identifier and user name (never the password); the CONNACK's return or
    /// reason code; the first PUBLISH's topic and QoS.
    pub mqtt_version: Option<u8>,
    pub mqtt_client_id: Option<String>,
    pub mqtt_username: Option<String>,
    pub mqtt_connack: Option<u8>,
    pub mqtt_topic: Option<String>,
    pub mqtt_qos: Option<u8>,
    /// Logins in FTP, SMTP AUTH, POP3 and IMAP: the user name of the latest
    /// attempt (never the password), attempts the server answered and those
    /// it refused.
    pub login_user: Option<String>,
    pub login_attempts: Option<u32>,
    pub login_failures: Option<u32>,
    /// Problems reading the payload: segments out of order or past the part
    /// read, overlapping retransmissions that disagree, data that does not
    /// parse as the protocol it started as.
    pub anomalies: u32,
}

/// A text column of [`AppInfo`]: its name in `flows` and how it is read.
pub type TextColumn = (&'static str, fn(&AppInfo) -> Option<&str>);

/// The text columns, in table order.
pub const TEXT_COLUMNS: &[TextColumn] = &[
    ("app_protocol", |a| a.protocol),
    ("http_method", |a| a.http_method.as_deref()),
    ("http_host", |a| a.http_host.as_deref()),
    ("http_uri", |a| a.http_uri.as_deref()),
    ("http_user_agent", |a| a.http_user_agent.as_deref()),
    ("http_content_type", |a| a.http_content_type.as_deref()),
    ("tls_version", |a| a.tls_version),
    ("tls_sni", |a| a.tls_sni.as_deref()),
    ("tls_alpn", |a| a.tls_alpn.as_deref()),
    ("tls_ja3", |a| a.ja3.as_deref()),
    ("tls_ja3s", |a| a.ja3s.as_deref()),
    ("tls_ja4", |a| a.ja4.as_deref()),
    ("tls_subject", |a| a.tls_subject.as_deref()),
    ("tls_issuer", |a| a.tls_issuer.as_deref()),
    ("ssh_client", |a| a.ssh_client.as_deref()),
    ("ssh_server", |a| a.ssh_server.as_deref()),
    ("ssh_hassh", |a| a.hassh.as_deref()),
    ("ssh_hassh_server", |a| a.hassh_server.as_deref()),
    ("mqtt_client_id", |a| a.mqtt_client_id.as_deref()),
    ("mqtt_username", |a| a.mqtt_username.as_deref()),
    ("mqtt_topic", |a| a.mqtt_topic.as_deref()),
    ("login_user", |a| a.login_user.as_deref()),
];

/// A small-number column of [`AppInfo`].
pub type ByteColumn = (&'static str, fn(&AppInfo) -> Option<u8>);

/// The small-number columns, in table order (after the text ones).
pub const BYTE_COLUMNS: &[ByteColumn] = &[
    ("mqtt_version", |a| a.mqtt_version),
    ("mqtt_connack", |a| a.mqtt_connack),
    ("mqtt_qos", |a| a.mqtt_qos),
];
