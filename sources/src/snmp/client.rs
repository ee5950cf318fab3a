//! One agent's SNMP session on top of snmp2's `AsyncSession`: timeouts, retries,
//! SNMPv3 discovery, and the GETBULK walk of several table columns at once.
//!
//! snmp2 reads exactly one datagram per request and rejects a reply whose
//! request ID does not match. After a timeout, the late reply to the abandoned
//! request would therefore be read by the next request, whose own reply would be
//! read by the one after, and so on. So after any failed attempt the session is
//! dropped and the next attempt starts on a new socket (for SNMPv3, with a new
//! engine discovery): one or two extra round trips, only after a failure.
//!
//! snmp2 also never advances the agent's engine time it puts in SNMPv3 requests
//! between responses, and rejects a response whose engine time moved more than
//! 150 s from the last one. A v3 session idle for longer than `V3_MAX_IDLE`
//! (a poll interval over two minutes) is therefore replaced before use, and an
//! engine-time mismatch is answered by repeating the request with the time the
//! agent just sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use snmp2::AsyncSession;

use super::value::{self, Oid, Readings, Value};

/// Why a request, and so the poll, failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PollError {
    #[error("no response within {0:?} ({1} attempts)")]
    Timeout(Duration, u32),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("SNMP: {0}")]
    Snmp(snmp2::Error),
    #[error("SNMPv3: {0} (check username, protocols and pass phrases)")]
    Auth(snmp2::Error),
    #[error("agent answered with error-status {status} at varbind {index}")]
    Status { status: u32, index: u32 },
    #[error("invalid OID {0}")]
    BadOid(String),
}

impl From<snmp2::Error> for PollError {
    fn from(e: snmp2::Error) -> Self {
        match e {
            snmp2::Error::AuthFailure(_) => PollError::Auth(e),
            e => PollError::Snmp(e),
        }
    }
}

/// An SNMPv3 session unused for this long gets a new engine discovery: its
/// engine time would be out of the agent's 150 s window.
const V3_MAX_IDLE: Duration = Duration::from_secs(100);

/// How a session authenticates.
#[derive(Clone)]
pub(crate) enum Credentials {
    Community(Vec<u8>),
    V3(Box<snmp2::v3::Security>),
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Bulk(u32),
}

/// The varbinds of one response, in order.
pub(crate) type Varbinds = Vec<(Oid, Value)>;

/// A session with one agent.
pub(crate) struct Client {
    addr: SocketAddr,
    credentials: Credentials,
    timeout: Duration,
    retries: u32,
    session: Option<AsyncSession>,
    next_request_id: i32,
    /// When the session last got a response.
    last_ok: Option<Instant>,
}

impl Client {
    pub(crate) fn new(
        addr: SocketAddr,
        credentials: Credentials,
        timeout: Duration,
        retries: u32,
    ) -> Client {
        // Distinct starting request IDs per session make stray replies from an
        // earlier process easy to tell apart.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Client {
            addr,
            credentials,
            timeout,
            retries,
            session: None,
            next_request_id: (seed & 0x3fff_ffff) as i32,
            last_ok: None,
        }
    }

    /// GET of every OID in one request.
    pub(crate) async fn get(&mut self, oids: &[Oid]) -> Result<Varbinds, PollError> {
        self.request(Op::Get, oids).await
    }

    /// GETBULK with no non-repeaters.
    pub(crate) async fn bulk(&mut self, oids: &[Oid], max_rep: u32) -> Result<Varbinds, PollError> {
        self.request(Op::Bulk(max_rep), oids).await
    }

    async fn request(&mut self, op: Op, oids: &[Oid]) -> Result<Varbinds, PollError> {
        let oids: Vec<snmp2::Oid<'static>> = oids
            .iter()
            .map(|o| value::oid_to_snmp2(o).ok_or_else(|| PollError::BadOid(value::oid_string(o))))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&snmp2::Oid<'_>> = oids.iter().collect();
        let attempts = self.retries + 1;
        let mut last = PollError::Timeout(self.timeout, attempts);
        for _ in 0..attempts {
            match tokio::time::timeout(self.timeout, self.attempt(op, &refs)).await {
                Ok(Ok(v)) => return Ok(v),
                // The agent understood and refused: asking again changes nothing.
                Ok(Err(e @ PollError::Status { .. })) => return Err(e),
                Ok(Err(e)) => {
                    self.session = None;
                    last = e;
                }
                Err(_) => {
                    self.session = None;
                    last = PollError::Timeout(self.timeout, attempts);
                }
            }
        }
        Err(last)
    }

    async fn attempt(&mut self, op: Op, oids: &[&snmp2::Oid<'_>]) -> Result<Varbinds, PollError> {
        let v3 = matches!(self.credentials, Credentials::V3(_));
        if v3 && self.last_ok.is_some_and(|t| t.elapsed() > V3_MAX_IDLE) {
            self.session = None;
        }
        if self.session.is_none() {
            let id = self.next_request_id;
            // Leave room for the IDs the session uses before it is replaced.
            self.next_request_id = self.next_request_id.wrapping_add(1 << 16) & 0x3fff_ffff;
            let mut s = match &self.credentials {
                Credentials::Community(c) => AsyncSession::new_v2c(self.addr, c, id).await?,
                Credentials::V3(sec) => {
                    AsyncSession::new_v3(self.addr, id, (**sec).clone()).await?
                }
            };
            // SNMPv3: learn the agent's engine ID, boots and time (no-op for v2c).
            s.init().await?;
            self.session = Some(s);
        }
        let Some(s) = self.session.as_mut() else {
            return Err(PollError::Snmp(snmp2::Error::Send));
        };
        // SNMPv3 answers the first request after discovery (and any after the
        // agent restarted) with a report that updates the engine time; snmp2
        // then asks for the request to be repeated.
        let mut tries = 0;
        loop {
            tries += 1;
            let r = match op {
                Op::Get => s.get_many(oids).await,
                Op::Bulk(n) => s.getbulk(oids, 0, n).await,
            };
            match r {
                Ok(pdu) => {
                    if pdu.error_status != 0 {
                        return Err(PollError::Status {
                            status: pdu.error_status,
                            index: pdu.error_index,
                        });
                    }
                    let mut out = Vec::new();
                    for (oid, v) in pdu.varbinds {
                        // An OID with a sub-identifier over 32 bits is not one
                        // we asked about: keep its place as an unreadable value.
                        let oid = value::oid_from_snmp2(&oid).unwrap_or_default();
                        out.push((oid, value::from_snmp2(v)));
                    }
                    self.last_ok = Some(Instant::now());
                    return Ok(out);
                }
                Err(
                    snmp2::Error::AuthUpdated
                    | snmp2::Error::AuthFailure(snmp2::v3::AuthErrorKind::EngineTimeMismatch),
                ) if tries < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What a walk received.
pub(crate) struct Walked {
    /// Requests sent.
    pub requests: u32,
    /// Varbinds received.
    pub varbinds: u32,
    /// The walk stopped at its request limit with columns left unread.
    pub truncated: bool,
}

/// Requests one walk may send, whatever the agent answers (a guard against
/// agents whose OIDs do not increase).
const MAX_WALK_REQUESTS: u32 = 64;

/// Walks several table columns with GETBULK, all in the same requests: each
/// request carries the last OID seen of every column not yet finished, and a
/// column finishes when its OIDs leave its subtree (or at endOfMibView). The
/// rows go into `out` under their full OIDs.
pub(crate) async fn walk(
    client: &mut Client,
    columns: &[Oid],
    max_rep: u32,
    out: &mut Readings,
) -> Result<Walked, PollError> {
    let mut last: Vec<Oid> = columns.to_vec();
    let mut done = vec![false; columns.len()];
    let mut walked = Walked {
        requests: 0,
        varbinds: 0,
        truncated: false,
    };
    while walked.requests < MAX_WALK_REQUESTS {
        let active: Vec<usize> = (0..columns.len()).filter(|&i| !done[i]).collect();
        if active.is_empty() {
            break;
        }
        let ask: Vec<Oid> = active.iter().map(|&i| last[i].clone()).collect();
        let vbs = client.bulk(&ask, max_rep).await?;
        walked.requests += 1;
        walked.varbinds += u32::try_from(vbs.len()).unwrap_or(u32::MAX);
        let n = active.len();
        let mut progressed = vec![false; n];
        // Varbinds come as repetitions of the requested columns, in order.
        for (k, (oid, v)) in vbs.into_iter().enumerate() {
            let (slot, col) = (k % n, active[k % n]);
            if done[col] {
                continue;
            }
            if matches!(v, Value::EndOfMibView)
                || !oid.starts_with(&columns[col])
                || oid <= last[col]
            {
                done[col] = true;
                continue;
            }
            last[col].clone_from(&oid);
            progressed[slot] = true;
            out.insert(oid, v);
        }
        // A column whose place the response did not reach (the agent cut the
        // response to fit its size limit) stays active for the next request.
        if !progressed.iter().any(|&p| p) {
            // Nothing new for any column: stop rather than ask the same again.
            break;
        }
    }
    walked.truncated = walked.requests >= MAX_WALK_REQUESTS && done.iter().any(|d| !d);
    Ok(walked)
}
