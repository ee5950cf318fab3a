//! The handlers called directly, without a network: what each request gives
//! back, and which requests are refused and how. The end-to-end tests drive the
//! same endpoint with pyarrow's and ADBC's clients over TCP.

use super::*;
use arrow_flight::decode::FlightRecordBatchStream;
use datafusion::arrow::array::{
    Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use tonic::Code;
use tonic::service::Interceptor;

/// A `flows` table of `n` rows, one a second from 09:00:00 on 2024-01-15,
/// `bytes` = the row's index.
fn output(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            cols::FIRST_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
    ]));
    const T0_US: i64 = 1_705_309_200_000_000; // 2024-01-15T09:00:00Z
    let ts: Vec<i64> = (0..n as i64).map(|i| T0_US + i * 1_000_000).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("10.0.0.{}", i % 4)),
            )),
            Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(
                0..n,
            )),
        ],
    )
    .expect("batch");
    let path = dir
        .path()
        .join("flows/date=2024-01-15/hour=09/part-1.parquet");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&path).expect("file"), schema, None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    dir
}

fn endpoint(dir: &tempfile::TempDir) -> Endpoint {
    Endpoint(Tables::new(dir.path().to_path_buf()).expect("tables"))
}

/// The batches a DoGet stream carries, decoded as a client would.
async fn batches(s: <Endpoint as FlightService>::DoGetStream) -> Vec<RecordBatch> {
    FlightRecordBatchStream::new_from_flight_data(s.map_err(FlightError::from))
        .try_collect()
        .await
        .expect("decode")
}

fn rows(b: &[RecordBatch]) -> usize {
    b.iter().map(RecordBatch::num_rows).sum()
}

async fn get(e: &Endpoint, ticket: impl Into<Vec<u8>>) -> Result<Vec<RecordBatch>, Status> {
    let s = e
        .do_get(Request::new(Ticket::new(ticket.into())))
        .await?
        .into_inner();
    Ok(batches(s).await)
}

/// The ticket of the flight a descriptor names.
async fn ticket_of(e: &Endpoint, d: FlightDescriptor) -> Vec<u8> {
    let info = e
        .get_flight_info(Request::new(d))
        .await
        .expect("info")
        .into_inner();
    info.endpoint[0]
        .ticket
        .as_ref()
        .expect("ticket")
        .ticket
        .to_vec()
}

#[tokio::test]
async fn list_flights_gives_each_table_with_a_ticket_that_reads_it() {
    let dir = output(5);
    let e = endpoint(&dir);
    let infos: Vec<FlightInfo> = e
        .list_flights(Request::new(Criteria::default()))
        .await
        .expect("list")
        .into_inner()
        .try_collect()
        .await
        .expect("infos");
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(
        info.flight_descriptor.as_ref().expect("descriptor").path,
        ["flows"]
    );
    let schema = info.clone().try_decode_schema().expect("schema");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert!(
        names.starts_with(&[cols::FIRST_TS, "src_ip", "bytes"]),
        "{names:?}"
    );
    assert!(
        names.contains(&"date") && names.contains(&"hour"),
        "{names:?}"
    );
    let ticket = info.endpoint[0]
        .ticket
        .as_ref()
        .expect("ticket")
        .ticket
        .to_vec();
    assert_eq!(rows(&get(&e, ticket).await.expect("do_get")), 5);
}

#[tokio::test]
async fn a_path_with_a_time_reads_only_what_came_after_it() {
    let dir = output(10);
    let e = endpoint(&dir);
    let d = FlightDescriptor::new_path(vec!["flows".into(), "2024-01-15T09:00:06Z".into()]);
    let ticket = ticket_of(&e, d).await;
    let got = get(&e, ticket).await.expect("do_get");
    // 09:00:07, 08 and 09: strictly after the time given.
    let bytes: Vec<u64> = got
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("bytes").expect("bytes");
            c.as_primitive::<UInt64Type>().values().to_vec()
        })
        .collect();
    let mut bytes = bytes;
    bytes.sort_unstable();
    assert_eq!(bytes, [7, 8, 9]);
}

#[tokio::test]
async fn sql_as_a_ticket_or_a_command_runs_and_its_schema_is_planned() {
    let dir = output(8);
    let e = endpoint(&dir);
    let sql = "SELECT src_ip, count(*) AS n FROM flows GROUP BY src_ip ORDER BY src_ip";
    let got = get(&e, sql).await.expect("sql ticket");
    assert_eq!(rows(&got), 4);
    let n = got[0].column_by_name("n").expect("n");
    assert_eq!(n.len(), 4);
    assert!(
        n.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .iter()
            .all(|&v| v == 2)
    );

    let d = FlightDescriptor::new_cmd(sql.as_bytes().to_vec());
    let schema = e
        .get_schema(Request::new(d.clone()))
        .await
        .expect("schema")
        .into_inner();
    let schema = Schema::try_from(&schema).expect("ipc schema");
    assert_eq!(schema.fields().len(), 2);
    let ticket = ticket_of(&e, d).await;
    assert!(
        std::str::from_utf8(&ticket)
            .expect("utf8")
            .contains("\"sql\"")
    );
    assert_eq!(rows(&get(&e, ticket).await.expect("do_get")), 4);
}

#[tokio::test]
async fn flight_sql_statements_and_catalog_go_through_the_same_endpoint() {
    let dir = output(3);
    let e = endpoint(&dir);
    let cmd = CommandStatementQuery {
        query: "SELECT sum(bytes) AS s FROM flows".into(),
        transaction_id: None,
    };
    let d = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let ticket = ticket_of(&e, d).await;
    assert!(
        is_flight_sql(&ticket),
        "the ticket is a Flight SQL statement handle"
    );
    let got = get(&e, ticket).await.expect("statement");
    let s = got[0].column(0).as_primitive::<UInt64Type>().value(0);
    assert_eq!(s, 3, "0 + 1 + 2");

    let tables = CommandGetTables {
        include_schema: false,
        ..Default::default()
    };
    let got = get(&e, tables.as_any().encode_to_vec())
        .await
        .expect("tables");
    let names = got[0]
        .column_by_name("table_name")
        .expect("table_name")
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(names, ["flows"]);
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let dir = output(2);
    let e = endpoint(&dir);
    let cases: [(&[u8], Code, &str); 6] = [
        (b"SELEC nonsense", Code::InvalidArgument, "SQL"),
        (b"SELECT * FROM missing", Code::InvalidArgument, "missing"),
        (
            br#"{"table": "flows\"; DROP"}"#,
            Code::InvalidArgument,
            "not a table name",
        ),
        (
            br#"{"table": "flows", "after": "yesterday"}"#,
            Code::InvalidArgument,
            "RFC 3339",
        ),
        (br#"{"other": 1}"#, Code::InvalidArgument, "expected"),
        (&[0xff, 0xfe], Code::InvalidArgument, "UTF-8"),
    ];
    for (ticket, code, says) in cases {
        let err = get(&e, ticket.to_vec()).await.expect_err("refused");
        assert_eq!(
            err.code(),
            code,
            "{:?}: {err}",
            String::from_utf8_lossy(ticket)
        );
        assert!(
            err.message().to_lowercase().contains(&says.to_lowercase()),
            "{:?}: {}",
            String::from_utf8_lossy(ticket),
            err.message()
        );
    }
    let poll = e
        .poll_flight_info(Request::new(FlightDescriptor::new_path(vec![
            "flows".into(),
        ])))
        .await
        .expect_err("poll");
    assert_eq!(poll.code(), Code::Unimplemented);
}

#[test]
fn the_bearer_token_is_checked_in_full() {
    let call = |tokens: &[&str], header: Option<&str>| {
        let mut auth = Auth(Arc::new(tokens.iter().map(|t| t.to_string()).collect()));
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().expect("header"));
        }
        auth.call(req).map(|_| ()).map_err(|s| s.code())
    };
    assert_eq!(call(&[], None), Ok(()), "no tokens: open");
    assert_eq!(call(&["s3cret", "other"], Some("Bearer other")), Ok(()));
    for bad in [
        None,
        Some("Bearer s3cre"),
        Some("Bearer s3cret2"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        assert_eq!(
            call(&["s3cret"], bad),
            Err(Code::Unauthenticated),
            "{bad:?}"
        );
    }
}
