//! `${VAR}` / `${VAR:-default}` substitution from the environment.

/// Where a `${VAR}` stands on its line, which decides how its value is written into the
/// YAML text so that it stays data: a value is never YAML (a password `a #b` must not lose
/// ` #b` to a comment, nor `x: y` become a mapping).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Plain,
    DoubleQuoted,
    SingleQuoted,
}

/// A value that reads back as the same text in a plain scalar, whatever the field's type.
fn plain_safe(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/+=-".contains(&b))
        && !v.starts_with('-')
        && !matches!(v, "null" | "Null" | "NULL")
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. Comments are left
/// alone, so a commented-out example needs no variable. A value is written as data: escaped
/// inside a quoted string; as a whole plain value, as itself when that reads back the same
/// (`port: ${PGPORT}` stays a number) and double-quoted otherwise; inside a longer plain
/// value only when it needs no quoting (else the error says to quote the value).
pub(crate) fn substitute_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        let mut ctx = Context::Plain;
        // Outside quotes: whether the current scalar has no text yet (after `key: `, `- `).
        let mut scalar_empty = true;
        let mut prev: Option<char> = None;
        let mut it = line.char_indices().peekable();
        while let Some((j, c)) = it.next() {
            let rest = &line[j..];
            if rest.starts_with("$${") {
                out.push_str("${");
                it.next();
                it.next();
                scalar_empty = false;
                prev = Some('{');
                continue;
            }
            if rest.starts_with("${") {
                let end = rest
                    .find('}')
                    .ok_or_else(|| (lineno, "unterminated ${...}".to_owned()))?;
                let expr = &rest[2..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let value = match (env(name), default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        return Err((lineno, format!("environment variable {name} is not set; export it or write ${{{name}:-default}}")))
                    }
                };
                let after = line[j + end + 1..].trim();
                let whole =
                    scalar_empty && (after.is_empty() || after.starts_with(['#', ',', ']', '}']));
                match ctx {
                    Context::DoubleQuoted => {
                        let q = serde_json::to_string(&value).unwrap_or_default();
                        out.push_str(&q[1..q.len() - 1]);
                    }
                    Context::SingleQuoted => out.push_str(&value.replace('\'', "''")),
                    Context::Plain if plain_safe(&value) => out.push_str(&value),
                    Context::Plain if whole => {
                        out.push_str(&serde_json::to_string(&value).unwrap_or_default())
                    }
                    Context::Plain => {
                        return Err((lineno, format!(
                            "the value of {name} needs quoting inside this value; write the whole value in double quotes (\"…${{{name}}}…\")"
                        )))
                    }
                }
                for _ in 0..end {
                    it.next();
                }
                scalar_empty = false;
                prev = Some('}');
                continue;
            }
            match ctx {
                Context::Plain => {
                    if c == '#' && prev.is_none_or(char::is_whitespace) {
                        out.push_str(rest);
                        break;
                    }
                    if (c == '"' || c == '\'') && scalar_empty {
                        ctx = if c == '"' {
                            Context::DoubleQuoted
                        } else {
                            Context::SingleQuoted
                        };
                        scalar_empty = false;
                    } else if c == ':' && it.peek().is_none_or(|(_, n)| n.is_whitespace()) {
                        scalar_empty = true;
                    } else if c == '-'
                        && scalar_empty
                        && it.peek().is_none_or(|(_, n)| n.is_whitespace())
                    {
                        // a sequence item: its scalar starts after the dash
                    } else if matches!(c, '[' | '{' | ',') {
                        scalar_empty = true;
                    } else if !c.is_whitespace() {
                        scalar_empty = false;
                    }
                }
                Context::DoubleQuoted => {
                    if c == '\\' {
                        out.push(c);
                        if let Some((_, n)) = it.next() {
                            out.push(n);
                        }
                        prev = None;
                        continue;
                    }
                    if c == '"' {
                        ctx = Context::Plain;
                    }
                }
                Context::SingleQuoted => {
                    if c == '\'' {
                        if it.peek().is_some_and(|(_, n)| *n == '\'') {
                            out.push(c);
                            it.next();
                        } else {
                            ctx = Context::Plain;
                        }
                    }
                }
            }
            out.push(c);
            prev = Some(c);
        }
    }
    Ok(out)
}
