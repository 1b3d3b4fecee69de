//! Output: buffered stdout, tables, JSON fields as text.

use std::io::Write as _;

use serde_json::Value;

/// Buffered stdout. A closed pipe (`herald topic consume t | head -1`) ends output quietly
/// instead of failing the command.
pub(super) struct Out {
    pub(super) w: std::io::BufWriter<std::io::Stdout>,
    pub(super) closed: bool,
}

impl Out {
    pub(super) fn new() -> Out {
        Out {
            w: std::io::BufWriter::new(std::io::stdout()),
            closed: false,
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.write_all(bytes).and_then(|()| self.w.flush());
        self.absorb_closed_pipe(r)
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.w.flush();
        self.absorb_closed_pipe(r)
    }

    pub(super) fn absorb_closed_pipe(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

pub(super) fn print_stdout(text: &str) -> anyhow::Result<()> {
    Out::new().write(text.as_bytes())?;
    Ok(())
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; columns];
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let all = std::iter::once(&header)
        .filter(|h| !h.is_empty())
        .chain(rows);
    for row in all.clone() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A field of a JSON object, `null` when absent.
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
