//! Argument parsers shared by the commands.

pub(super) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    parse_pair(s, '=', "KEY=VALUE")
}

pub(super) fn parse_header(s: &str) -> Result<(String, String), String> {
    parse_pair(s, ':', "KEY:VALUE")
}

pub(super) fn parse_pair(s: &str, sep: char, shape: &str) -> Result<(String, String), String> {
    match s.split_once(sep) {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not {shape}")),
    }
}
