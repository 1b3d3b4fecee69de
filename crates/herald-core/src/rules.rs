//! The shared shape of every name rule in the crate: a length bound, a first-character class
//! and a class for the rest.

use crate::error::GrammarError;

pub(crate) struct NameRule {
    pub field: &'static str,
    pub max: usize,
    pub first: fn(char) -> bool,
    pub rest: fn(char) -> bool,
    pub rule: &'static str,
}

impl NameRule {
    /// Checks emptiness, then length, then characters, so that an overlong value is reported
    /// by its length and never echoed back in full.
    pub(crate) fn check(&self, value: &str) -> Result<(), GrammarError> {
        if value.is_empty() {
            return Err(GrammarError::Empty {
                field: self.field,
                rule: self.rule,
            });
        }
        // Every accepted character is ASCII, so the byte length bounds the character count and
        // the exact count is only needed for the message.
        if value.len() > self.max {
            let len = value.chars().count();
            if len > self.max {
                return Err(GrammarError::TooLong {
                    field: self.field,
                    len,
                    max: self.max,
                    rule: self.rule,
                });
            }
        }
        for (position, c) in value.chars().enumerate() {
            if position == 0 {
                if (self.rest)(c) && !(self.first)(c) {
                    return Err(GrammarError::InvalidStart {
                        field: self.field,
                        value: value.to_owned(),
                        found: c,
                        rule: self.rule,
                    });
                }
                if !(self.first)(c) {
                    return Err(self.invalid(value, c, position));
                }
            } else if !(self.rest)(c) {
                return Err(self.invalid(value, c, position));
            }
        }
        Ok(())
    }

    fn invalid(&self, value: &str, found: char, position: usize) -> GrammarError {
        GrammarError::InvalidChar {
            field: self.field,
            value: value.to_owned(),
            found,
            position,
            rule: self.rule,
        }
    }
}

pub(crate) fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub(crate) fn is_lower_token_char(c: char) -> bool {
    is_lower_alnum(c) || c == '_' || c == '-'
}

pub(crate) fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

pub(crate) fn is_tenant_char(c: char) -> bool {
    is_alnum(c) || c == '_' || c == '-'
}

pub(crate) fn is_topic_char(c: char) -> bool {
    is_alnum(c) || c == '.' || c == '_' || c == '-'
}
