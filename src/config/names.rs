//! Table and topic names as connector files spell them.

pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// `schema.table` with either part in SQL double quotes → the raw `schema.table`. Unquoted
/// parts are taken as written (no case folding: the raw form names tables exactly).
pub fn unquote_table(name: &str) -> Result<String, String> {
    if !name.contains('"') {
        return Ok(name.to_owned());
    }
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("{name:?} has an unterminated quoted name")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.contains('.') {
            return Err(format!(
                "{name:?}: names containing a dot are not supported"
            ));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => {
                return Err(format!(
                "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
            ))
            }
        }
    }
    match parts.as_slice() {
        [s, t] if !s.is_empty() && !t.is_empty() => Ok(format!("{s}.{t}")),
        _ => Err(format!(
            "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
        )),
    }
}

/// Splits `schema.table`.
pub fn qualified(name: &str) -> Result<(&str, &str), String> {
    match name.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => Ok((s, t)),
        _ => Err(format!("{name:?} must be schema.table, e.g. public.orders")),
    }
}

pub(crate) fn validate_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 200 {
        return Err("must be 1 to 200 characters".into());
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{t:?} may only contain letters, digits, '.', '_' and '-' (Kafka topic rules)"
        ));
    }
    Ok(())
}
