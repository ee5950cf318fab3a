//! The tables over Arrow Flight, with Flight SQL.
//!
//! Plain Flight (pyarrow.flight and other Flight clients):
//! - `ListFlights` gives one flight per table: descriptor path `[table]`, its
//!   schema, and a ticket that reads it.
//! - `GetFlightInfo` / `GetSchema` take a path `[table]` or `[table, after]`
//!   (RFC 3339: only windows, flows or events after that time), or a command
//!   holding SQL text.
//! - `DoGet` takes the ticket of a flight info, or SQL text as the ticket.
//!
//! Flight SQL (ADBC's driver, JDBC tools): statement queries, and the catalog
//! `amoskys`, schema `public` and the tables, with their schemas.
//!
//! Results stream batch by batch from DataFusion's execution: a table is never
//! gathered in memory to be sent. With tokens configured every call needs
//! `authorization: Bearer <token>`; TLS and, with a client CA, mutual TLS are
//! tonic's (rustls).
//!
//! Why one file of this size: the Flight and Flight SQL handlers are one
//! `FlightService` implementation sharing the table lookup, the ticket encoding and
//! the TLS set-up; apart, each half would import the other.

mod config;
pub use config::FlightConfig;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use amoskys_schemas::cols;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTables,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::prelude::SessionContext;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use amoskys_sinks::parquet::Recent;

use crate::catalog;
use crate::error::QueryError;

/// Catalog and schema names the tables are listed under.
pub const CATALOG: &str = "amoskys";
pub const SCHEMA: &str = "public";

/// Where and how the endpoint listens.
#[derive(Clone, Debug)]
pub struct FlightSettings {
    /// Output root whose tables are served.
    pub data: PathBuf,
    pub listen: std::net::SocketAddr,
    /// Accepted bearer tokens; none means no authentication.
    pub tokens: Vec<String>,
    /// Server certificate and key (PEM); none means plaintext.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA (PEM) client certificates must chain to: mutual TLS.
    pub client_ca: Option<PathBuf>,
}

fn to_status(e: impl Into<QueryError>) -> Status {
    match e.into() {
        QueryError::DataFusion(e) => {
            use datafusion::error::DataFusionError as D;
            let msg = e.strip_backtrace();
            match e.find_root() {
                D::SQL(..) | D::Plan(..) | D::SchemaError(..) => Status::invalid_argument(msg),
                _ => Status::internal(msg),
            }
        }
        e => Status::internal(e.to_string()),
    }
}

/// The time column `after` filters each table on.
fn time_column(table: &str) -> &'static str {
    match table {
        "flows" => cols::FIRST_TS,
        "events" => "ts",
        _ => cols::WINDOW_START,
    }
}

/// What a plain-Flight ticket or descriptor asks for, as SQL.
fn table_sql(table: &str, after: Option<&str>) -> Result<String, Status> {
    if !table
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Status::invalid_argument(format!(
            "{table:?} is not a table name"
        )));
    }
    Ok(match after {
        None => format!("SELECT * FROM \"{table}\""),
        Some(t) => {
            let ts = chrono_like(t)?;
            format!(
                "SELECT * FROM \"{table}\" WHERE {} > TIMESTAMP '{ts}' AND date >= '{}'",
                time_column(table),
                &ts[..10]
            )
        }
    })
}

/// Checks an RFC 3339 time (as `2024-01-15T09:00:00Z`) enough to put it in SQL.
fn chrono_like(t: &str) -> Result<String, Status> {
    let ok = t.len() >= 19
        && t.is_char_boundary(10)
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"-:TZ.+ ".contains(&b))
        && t.as_bytes()[4] == b'-'
        && t.as_bytes()[7] == b'-';
    if !ok {
        return Err(Status::invalid_argument(format!(
            "after = {t:?}: write an RFC 3339 time such as 2024-01-15T09:00:00Z"
        )));
    }
    Ok(t.replace('T', " ").trim_end_matches('Z').to_string())
}

/// SQL for a ticket: a JSON ticket `{"table": ..., "after": ...}` or
/// `{"sql": ...}` (as flight infos give), or SQL text.
fn ticket_sql(bytes: &[u8]) -> Result<String, Status> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("a ticket is UTF-8: SQL or a flight's JSON"))?;
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Status::invalid_argument(format!("ticket: {e}")))?;
        if let Some(q) = v.get("sql").and_then(|q| q.as_str()) {
            return Ok(q.to_string());
        }
        if let Some(t) = v.get("table").and_then(|t| t.as_str()) {
            return table_sql(t, v.get("after").and_then(|a| a.as_str()));
        }
        return Err(Status::invalid_argument(
            "ticket: expected {\"table\": ...} or {\"sql\": ...}",
        ));
    }
    Ok(text.to_string())
}

/// The endpoint's state: the directory it serves, and in the long-running job
/// the rows of each table not yet in a finished file.
#[derive(Clone)]
pub struct Tables {
    data: PathBuf,
    info: Arc<SqlInfoData>,
    live: Option<Arc<Vec<Arc<Recent>>>>,
}

impl Tables {
    pub fn new(data: PathBuf) -> Result<Self, QueryError> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "amoskys-pipeline");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        let info = b.build().map_err(|e| QueryError::Usage(e.to_string()))?;
        Ok(Tables {
            data,
            info: Arc::new(info),
            live: None,
        })
    }

    /// The tables of the running job: finished files under `data` and the rows
    /// in `recent` together.
    pub fn live(data: PathBuf, recent: Vec<Arc<Recent>>) -> Result<Self, QueryError> {
        let mut t = Tables::new(data)?;
        t.live = Some(Arc::new(recent));
        Ok(t)
    }

    fn table_names(&self) -> Result<Vec<String>, Status> {
        Ok(match &self.live {
            Some(l) => l.iter().map(|r| r.table.to_string()).collect(),
            None => catalog::tables(&self.data)
                .map_err(to_status)?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        })
    }

    async fn ctx(&self) -> Result<SessionContext, Status> {
        match &self.live {
            None => catalog::open(&self.data).await.map_err(to_status),
            Some(l) => {
                let ctx = catalog::session();
                for r in l.iter() {
                    catalog::register_live(&ctx, r, &self.data)
                        .await
                        .map_err(to_status)?;
                }
                Ok(ctx)
            }
        }
    }

    /// Plans `sql` and gives its result schema.
    async fn plan(&self, sql: &str) -> Result<(SessionContext, SchemaRef), Status> {
        let ctx = self.ctx().await?;
        let df = ctx.sql(sql).await.map_err(to_status)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok((ctx, schema))
    }

    /// Runs `sql`, streaming its batches as Flight data. In the running job the
    /// rows not yet in files are copied and the files listed under the tables'
    /// read locks, so no row is seen twice or missed as a file is finished.
    async fn stream(
        &self,
        sql: &str,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let mut guards = Vec::new();
        if let Some(l) = &self.live {
            for r in l.iter() {
                guards.push(r.reading().await);
            }
        }
        let ctx = self.ctx().await?;
        let df = ctx.sql(sql).await.map_err(to_status)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let plan = df.create_physical_plan().await.map_err(to_status)?;
        drop(guards);
        let batches = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
            .map_err(to_status)?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        Ok(FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from)
            .boxed())
    }

    fn info(
        schema: &SchemaRef,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor))
    }

    /// The SQL and ticket of a plain-Flight descriptor.
    fn descriptor_sql(d: &FlightDescriptor) -> Result<(String, Vec<u8>), Status> {
        if !d.path.is_empty() {
            let table = &d.path[0];
            let after = d.path.get(1).map(String::as_str);
            let sql = table_sql(table, after)?;
            let mut t = serde_json::json!({ "table": table });
            if let Some(a) = after {
                t["after"] = a.into();
            }
            return Ok((sql, t.to_string().into_bytes()));
        }
        let sql = std::str::from_utf8(&d.cmd)
            .map_err(|_| Status::invalid_argument("a command is SQL text (UTF-8)"))?
            .to_string();
        let t = serde_json::json!({ "sql": sql }).to_string().into_bytes();
        Ok((sql, t))
    }
}

/// Whether `bytes` are a Flight SQL message (an `Any` of the Flight SQL protocol).
fn is_flight_sql(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|a| {
        a.type_url
            .starts_with("type.googleapis.com/arrow.flight.protocol.sql.")
    })
}

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightSqlService for Tables {
    type FlightService = Tables;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (_, schema) = self.plan(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into(),
        };
        let info = Tables::info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8"))?;
        Ok(Response::new(self.stream(sql).await?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        meta_info(query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        let schema = b.schema();
        let batch = b.build();
        Ok(Response::new(one_batch(schema, batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        meta_info(query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG, SCHEMA);
        let schema = b.schema();
        let batch = b.build();
        Ok(Response::new(one_batch(schema, batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        meta_info(query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = self.ctx().await?;
        let mut b = query.into_builder();
        for name in self.table_names()? {
            let t = ctx.table_provider(name.as_str()).await.map_err(to_status)?;
            b.append(CATALOG, SCHEMA, &name, "TABLE", &t.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = b.schema();
        let batch = b.build();
        Ok(Response::new(one_batch(schema, batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        meta_info(
            query.clone().into_builder(&self.info).schema(),
            &query,
            request,
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let b = query.into_builder(&self.info);
        let schema = b.schema();
        let batch = b.build();
        Ok(Response::new(one_batch(schema, batch)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The flight of a Flight SQL metadata command: its result schema, and the
/// command itself as the ticket (DoGet routes it back here).
fn meta_info(
    schema: SchemaRef,
    cmd: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = Tables::info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())?;
    Ok(Response::new(info))
}

fn one_batch(
    schema: SchemaRef,
    batch: Result<datafusion::arrow::array::RecordBatch, FlightError>,
) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from)
        .boxed()
}

/// Plain Flight in front of Flight SQL: Flight SQL messages go to [`Tables`]'s
/// Flight SQL implementation, everything else is tables and SQL text.
#[derive(Clone)]
pub struct Endpoint(pub Tables);

#[tonic::async_trait]
impl FlightService for Endpoint {
    type HandshakeStream = Stream2<HandshakeResponse>;
    type ListFlightsStream = Stream2<FlightInfo>;
    type DoGetStream = Stream2<FlightData>;
    type DoPutStream = Stream2<PutResult>;
    type DoExchangeStream = Stream2<FlightData>;
    type DoActionStream = Stream2<arrow_flight::Result>;
    type ListActionsStream = Stream2<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // Authentication is the bearer token every call carries (checked before
        // this runs); the handshake only confirms it.
        let resp = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(resp) }).boxed(),
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let ctx = self.0.ctx().await?;
        let mut infos = Vec::new();
        for name in self.0.table_names()? {
            let t = ctx.table_provider(name.as_str()).await.map_err(to_status)?;
            let ticket = serde_json::json!({ "table": name })
                .to_string()
                .into_bytes();
            infos.push(Tables::info(
                &t.schema(),
                ticket,
                FlightDescriptor::new_path(vec![name]),
            ));
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if is_flight_sql(&request.get_ref().cmd) {
            return <Tables as FlightService>::get_flight_info(&self.0, request).await;
        }
        let d = request.into_inner();
        let (sql, ticket) = Tables::descriptor_sql(&d)?;
        let (_, schema) = self.0.plan(&sql).await?;
        Ok(Response::new(Tables::info(&schema, ticket, d)?))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "queries finish in GetFlightInfo: poll is not needed",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let d = request.into_inner();
        let sql = if is_flight_sql(&d.cmd) {
            let any = Any::decode(&*d.cmd).map_err(|e| Status::invalid_argument(e.to_string()))?;
            match any.unpack::<CommandStatementQuery>() {
                Ok(Some(q)) => q.query,
                _ => {
                    return Err(Status::unimplemented(
                        "GetSchema of this Flight SQL command",
                    ));
                }
            }
        } else {
            Tables::descriptor_sql(&d)?.0
        };
        let (_, schema) = self.0.plan(&sql).await?;
        let r: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(r))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if is_flight_sql(&request.get_ref().ticket) {
            return <Tables as FlightService>::do_get(&self.0, request).await;
        }
        let sql = ticket_sql(&request.get_ref().ticket)?;
        Ok(Response::new(self.0.stream(&sql).await?))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("the tables are read-only"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("the tables are read-only"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        <Tables as FlightService>::do_action(&self.0, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        <Tables as FlightService>::list_actions(&self.0, request).await
    }
}

/// Checks the bearer token of every call.
#[derive(Clone)]
struct Auth(Arc<Vec<String>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.0.is_empty() {
            return Ok(req);
        }
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("a bearer token is needed: authorization: Bearer <token>")
            })?;
        // Compare every token in full, so timing says nothing about a near miss.
        let ok = self.0.iter().fold(false, |acc, t| {
            let same = t.len() == given.len()
                && t.bytes()
                    .zip(given.bytes())
                    .fold(0u8, |d, (a, b)| d | (a ^ b))
                    == 0;
            acc | same
        });
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated("the bearer token is not valid"))
        }
    }
}

/// Serves the endpoint until `shutdown` completes.
pub async fn serve(
    s: FlightSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), QueryError> {
    let listener = bind(s.listen).await?;
    serve_tables(s, listener, None, shutdown).await
}

/// Binds the endpoint's address (so that a taken port fails a start at once).
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, QueryError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| QueryError::Io {
            path: format!("listen on {addr}").into(),
            source,
        })
}

/// Serves `tables` (by default the directory's) on `listener` until `shutdown`
/// completes.
pub async fn serve_tables(
    s: FlightSettings,
    listener: tokio::net::TcpListener,
    tables: Option<Tables>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), QueryError> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| QueryError::Io {
            path: p.clone(),
            source,
        })
    };
    let mut builder = Server::builder();
    if let Some((cert, key)) = &s.tls {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &s.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| QueryError::Usage(format!("TLS: {e}")))?;
    }
    let svc = FlightServiceServer::with_interceptor(
        Endpoint(tables.unwrap_or(Tables::new(s.data.clone())?)),
        Auth(Arc::new(s.tokens.clone())),
    );
    builder
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| QueryError::Usage(format!("serve Flight on {}: {e}", s.listen)))
}

#[cfg(test)]
mod tests;
