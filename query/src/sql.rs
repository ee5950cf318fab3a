//! Running SQL and writing its results: an aligned table, CSV, JSON lines or
//! Parquet. CSV, JSON lines and Parquet are written batch by batch as the query
//! produces them; the table needs every row to size its columns.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::QueryError;

/// How results are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Jsonl,
    /// A Parquet file (needs --output, or a redirected standard output).
    Parquet,
}

/// Splits text into queries: at `;` outside quotes and comments when it has
/// any, else one query per non-empty line. `--` comments are kept in their query.
pub fn split_queries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut saw_semicolon = false;
    let mut chars = text.chars().peekable();
    let mut in_comment = false;
    while let Some(c) = chars.next() {
        if in_comment {
            cur.push(c);
            if c == '\n' {
                in_comment = false;
            }
            continue;
        }
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, '-') if chars.peek() == Some(&'-') => {
                in_comment = true;
                cur.push(c);
            }
            (None, ';') => {
                saw_semicolon = true;
                out.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c),
        }
    }
    out.push(cur);
    let queries: Vec<String> = if saw_semicolon {
        out
    } else {
        text.lines().map(str::to_string).collect()
    };
    queries
        .into_iter()
        .map(|q| q.trim().to_string())
        .filter(|q| {
            q.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        })
        .collect()
}

/// Runs `query` and writes its rows to `out` in `format`. Returns the row count.
pub async fn run(
    ctx: &SessionContext,
    query: &str,
    format: Format,
    out: &mut (dyn Write + Send),
) -> Result<u64, QueryError> {
    let df = ctx.sql(query).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    match format {
        Format::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                batches.push(b);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            writeln!(out, "{}", pretty_format_batches(&batches)?).map_err(io)?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            let mut any = false;
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
                any = true;
            }
            if !any {
                w.write(&RecordBatch::new_empty(schema))?;
            }
        }
        Format::Jsonl => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.close()?;
        }
    }
    Ok(rows)
}

fn io(e: std::io::Error) -> QueryError {
    QueryError::Io {
        path: "output".into(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_split_at_semicolons_outside_quotes_or_per_line() {
        assert_eq!(
            split_queries("select 1;\nselect ';' as x ; -- note; here\nselect 2;"),
            ["select 1", "select ';' as x", "-- note; here\nselect 2"]
        );
        assert_eq!(
            split_queries("select 1\n\nselect 2\n"),
            ["select 1", "select 2"]
        );
        assert!(split_queries(" ;\n-- only a comment\n").is_empty());
    }
}
