//! Errors that reach a PostgreSQL client: a SQLSTATE and a message that is
//! safe to show (never an internal detail such as an upstream address).

use bytes::BytesMut;

use crate::protocol::backend;

/// Severity of an error sent to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error in the shape a client understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    pub(crate) severity: Severity,
    pub code: SqlState,
    pub message: String,
    /// More ErrorResponse fields, as PostgreSQL sends them for this error
    /// (position `P`, source `F`/`L`/`R`), in order.
    pub fields: Vec<(u8, String)>,
}

/// A SQLSTATE pgtenant sends: only the constants in [`sqlstate`] exist, so
/// no code is spelled out anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

impl SqlState {
    /// The five characters of the code.
    pub fn code(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<&str> for SqlState {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<str> for SqlState {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// SQLSTATEs pgtenant sends itself.
pub mod sqlstate {
    use super::SqlState;

    pub(crate) const INVALID_PASSWORD: SqlState = SqlState("28P01");
    pub(crate) const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    pub(crate) const INVALID_CATALOG_NAME: SqlState = SqlState("3D000");
    pub(crate) const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub(crate) const CONNECTION_FAILURE: SqlState = SqlState("08006");
    pub(crate) const CANNOT_CONNECT_NOW: SqlState = SqlState("57P03");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    pub(crate) const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    pub(crate) const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub(crate) const QUERY_CANCELED: SqlState = SqlState("57014");
    pub(crate) const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub(crate) const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub(crate) const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub(crate) const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub(crate) const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub(crate) const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    pub(crate) const UNTRANSLATABLE_CHARACTER: SqlState = SqlState("22021");

    /// The static form of a code the server sent, when it is one pgtenant
    /// passes on for a failure of its own session set-up.
    pub(crate) fn of_setup_failure(code: &str) -> Option<SqlState> {
        [UNDEFINED_OBJECT, INSUFFICIENT_PRIVILEGE, INVALID_PARAMETER_VALUE, INVALID_TEXT_REPRESENTATION, SYNTAX_ERROR]
            .into_iter()
            .find(|known| known.code() == code)
    }
}

impl ClientError {
    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        ClientError { severity: Severity::Fatal, code, message: message.into(), fields: Vec::new() }
    }

    pub(crate) fn error(code: SqlState, message: impl Into<String>) -> Self {
        ClientError { severity: Severity::Error, code, message: message.into(), fields: Vec::new() }
    }

    /// The error PostgreSQL gives for both an unknown user and a wrong password.
    pub(crate) fn password_failed(user: &str) -> Self {
        Self::fatal(sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
    }

    pub(crate) fn protocol_violation(message: impl Into<String>) -> Self {
        Self::fatal(sqlstate::PROTOCOL_VIOLATION, message)
    }

    /// The same error with one more ErrorResponse field.
    pub(crate) fn with_field(mut self, field: u8, value: impl Into<String>) -> Self {
        self.fields.push((field, value.into()));
        self
    }

    /// Appends this error as an ErrorResponse message.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        backend::error_response_with(buf, self.severity.as_str(), self.code.code(), &self.message, &self.fields);
    }
}
