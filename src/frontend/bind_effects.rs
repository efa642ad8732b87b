//! What executing a prepared statement does beyond its rows — resets,
//! setting changes, DISCARD, LISTEN — recorded at Parse and applied at each Bind,
//! and set_config() calls with bind parameters, judged with the bound values.

use crate::error::ClientError;
use crate::guard::inspect::note_set_config;
use crate::guard::set_config::{Arg, BoundSetConfig};
use crate::guard::Inspection;

/// What executing a prepared statement does beyond its rows.
#[derive(Debug)]
pub(super) struct PreparedEffects {
    pub(super) bound_set_configs: Vec<BoundSetConfig>,
    pub(super) discards_statements: bool,
    pub(super) resets_context: bool,
    pub(super) wipes_settings: bool,
    pub(super) setting_changes: Vec<(String, Option<String>)>,
    /// Its LISTEN/UNLISTEN, when the listen hub serves them.
    pub(super) channel_ops: Vec<super::listening::ChannelOp>,
}

impl PreparedEffects {
    pub(super) fn any(&self) -> bool {
        !self.bound_set_configs.is_empty()
            || self.discards_statements
            || self.resets_context
            || self.wipes_settings
            || !self.setting_changes.is_empty()
            || !self.channel_ops.is_empty()
    }
}

/// The parameter values of a Bind (after its portal and statement names).
pub(super) struct BindValues<'a> {
    formats: Vec<i16>,
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> BindValues<'a> {
    pub(super) fn read(mut body: &'a [u8]) -> Option<BindValues<'a>> {
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let (head, tail) = body.split_at_checked(n)?;
            body = tail;
            Some(head)
        };
        let count = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
        let format_count = usize::try_from(count(take(2)?)).ok()?;
        let mut formats = Vec::with_capacity(format_count);
        for _ in 0..format_count {
            formats.push(count(take(2)?));
        }
        let value_count = usize::try_from(count(take(2)?)).ok()?;
        let mut values = Vec::with_capacity(value_count);
        for _ in 0..value_count {
            let len = i32::from_be_bytes(take(4)?.try_into().ok()?);
            values.push(if len < 0 { None } else { Some(take(usize::try_from(len).ok()?)?) });
        }
        Some(BindValues { formats, values })
    }

    /// Parameter `n` (1-based): `None` when absent, `Some(None)` when NULL.
    fn get(&self, n: usize) -> Option<Option<&'a [u8]>> {
        self.values.get(n.checked_sub(1)?).copied()
    }

    fn is_binary(&self, n: usize) -> bool {
        match self.formats.len() {
            0 => false,
            1 => self.formats[0] == 1,
            _ => self.formats.get(n.wrapping_sub(1)).is_some_and(|f| *f == 1),
        }
    }

    /// An argument with its parameter replaced by the bound value.
    fn resolve(&self, arg: &Arg, boolean: bool) -> Result<Arg, ClientError> {
        let Arg::Param(n) = *arg else { return Ok(arg.clone()) };
        let bytes = match self.get(n) {
            Some(Some(bytes)) => bytes,
            // NULL, or no such parameter (the server refuses the Bind).
            _ => return Ok(Arg::Computed),
        };
        if boolean {
            let truth = if self.is_binary(n) {
                bytes.first().is_some_and(|b| *b != 0)
            } else {
                let text = String::from_utf8_lossy(bytes).trim().to_ascii_lowercase();
                matches!(text.as_str(), "t" | "true" | "on" | "1" | "y" | "yes")
            };
            return Ok(Arg::Bool(truth));
        }
        std::str::from_utf8(bytes).map(|text| Arg::Const(text.to_owned())).map_err(|_| {
            ClientError::error(
                crate::error::sqlstate::UNTRANSLATABLE_CHARACTER,
                "pgtenant can only judge set_config() arguments sent as UTF-8",
            )
        })
    }
}

/// Judges one set_config() call with its bound values, as the guard judges
/// a constant one.
pub(super) fn judge_bound_set_config(
    call: &BoundSetConfig,
    values: &BindValues<'_>,
    tenant_setting: &str,
    bound: &mut Inspection,
) -> Result<(), ClientError> {
    let name = match values.resolve(&call.name, false)? {
        Arg::Const(name) => name.to_ascii_lowercase(),
        // A NULL name: the server refuses the call.
        _ => return Ok(()),
    };
    if crate::setting_rules::is_reserved(&name, tenant_setting) {
        return Err(ClientError::error(
            crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("set_config() of \"{name}\": {}", crate::setting_rules::CONTEXT_MANAGED),
        ));
    }
    let value = values.resolve(&call.value, false)?;
    let scope = values.resolve(&call.scope, true)?;
    note_set_config(name, value, scope, bound)
}
