//! Query surfaces of amoskys-pipeline: the tables it writes, read with DataFusion
//! SQL, and served over Arrow Flight and Flight SQL.

pub mod catalog;
mod error;
pub mod flight;
pub mod sql;

pub use error::QueryError;
