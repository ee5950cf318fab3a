use thiserror::Error;

/// Errors raised while turning records into Arrow data.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("feature row has {got} values, the catalogue has {want}")]
    RowWidth { got: usize, want: usize },
    #[error("feature {feature} is documented as never null but has no value")]
    UnexpectedNull { feature: &'static str },
}

impl SchemaError {
    /// A short, bounded code for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::Arrow(_) => "arrow",
            SchemaError::RowWidth { .. } => "row_width",
            SchemaError::UnexpectedNull { .. } => "unexpected_null",
        }
    }
}
