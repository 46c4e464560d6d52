//! One error type for everything a user or the worker can trip over, mapped once to a
//! PostgreSQL error report with SQLSTATE, detail and hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, Clone)]
pub struct GcError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type GcResult<T> = Result<T, GcError>;

impl GcError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        GcError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `22023`: a parameter value that can never work.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// `42501`: the caller may not act on this table.
    pub fn not_owner(table: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {table}"),
        )
        .detail("session_gc acts on a table only for its owner, a member of the owning role, or a superuser.")
        .hint(format!("Run this as the owner of {table}, or ask its owner to grant you membership in the owning role."))
    }

    fn report(&self) -> ErrorReport {
        let mut report = ErrorReport::new(self.code, self.message.clone(), "session_gc");
        if let Some(detail) = &self.detail {
            report = report.set_detail(detail.clone());
        }
        if let Some(hint) = &self.hint {
            report = report.set_hint(hint.clone());
        }
        report
    }

    /// Raises this error as a PostgreSQL ERROR; the current (sub)transaction aborts.
    pub fn raise(&self) -> ! {
        self.report().report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }

    /// Emits this as a WARNING and carries on.
    pub fn warn(&self) {
        self.report().report(PgLogLevel::WARNING);
    }
}

impl std::fmt::Display for GcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// Unwraps a result at the SQL boundary: an error becomes a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for GcResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(value) => value,
            Err(error) => error.raise(),
        }
    }
}

/// SPI failures that are not PostgreSQL errors (those unwind on their own) become internal errors.
impl From<pgrx::spi::SpiError> for GcError {
    fn from(error: pgrx::spi::SpiError) -> Self {
        GcError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("SPI failure: {error}"),
        )
    }
}
