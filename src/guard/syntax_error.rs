//! A syntax error as PostgreSQL reports it: message, position (`P`) and the
//! parser's source location (`F`, `L`, `R`). The pg_query crate keeps only
//! the message of libpg_query's error, so on this (rare) path the guard asks
//! libpg_query itself, through its C API, for the rest.

use std::ffi::{c_char, c_int, CStr, CString};

use crate::error::ClientError;

/// libpg_query's `PgQueryError` (pg_query.h).
#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

/// libpg_query's `PgQueryParseResult` (pg_query.h).
#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// The client's error for `sql`, which pg_query failed to parse with
/// `message`.
pub(crate) fn syntax_error(sql: &str, message: String) -> ClientError {
    let error = ClientError::error(crate::error::sqlstate::SYNTAX_ERROR, message);
    let Ok(input) = CString::new(sql) else { return error };
    // SAFETY: `input` is a NUL-terminated string that outlives the call; the
    // result is read only while it is alive and freed exactly once, by the
    // library's own function; every pointer is checked for NULL first.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let fields = result.error.as_ref().map(|e| {
            let text = |p: *mut c_char| (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned());
            (e.cursorpos, text(e.filename), e.lineno, text(e.funcname))
        });
        pg_query_free_parse_result(result);
        let Some((position, file, line, routine)) = fields else { return error };
        let mut error = error;
        if position > 0 {
            error = error.with_field(b'P', position.to_string());
        }
        if let Some(file) = file {
            error = error.with_field(b'F', file).with_field(b'L', line.to_string());
        }
        if let Some(routine) = routine {
            error = error.with_field(b'R', routine);
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_source_come_from_the_parser() {
        let error = syntax_error("SELECT 1; SELEKT 2", "syntax error at or near \"SELEKT\"".into());
        assert_eq!(error.code, "42601");
        let field = |f: u8| error.fields.iter().find(|(k, _)| *k == f).map(|(_, v)| v.as_str());
        assert_eq!(field(b'P'), Some("11"));
        assert_eq!(field(b'F'), Some("scan.l"));
        assert_eq!(field(b'R'), Some("scanner_yyerror"));
        assert!(field(b'L').is_some_and(|l| l.parse::<u32>().is_ok()));
        let unterminated = syntax_error("SELECT 'abc", "unterminated quoted string".into());
        assert_eq!(unterminated.fields.iter().find(|(k, _)| *k == b'P').map(|(_, v)| v.as_str()), Some("8"));
    }
}
