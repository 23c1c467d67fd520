//! `${VAR}` / `${VAR:-default}` substitution from the environment, inside the values the
//! YAML parser produced, never in the text: a value is data whatever it holds (a password
//! `a #b` keeps ` #b`, `x: y` stays a string, `1234` or `true` in a string field stay text).
//! `$${` is a literal `${`. Comments are not values, so their variables need not be set.
//!
//! [`Expand`] wraps the YAML deserializer: every string scalar on its way to a field
//! passes through [`expand`], and when the field wants a number or a boolean, the
//! substituted text is read as one (`port: ${PGPORT}`). An unset variable is an error at
//! that field, so the message names it.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

/// Replaces `${VAR}` and `${VAR:-default}` in one value; `$${` is a literal `${`.
pub(crate) fn expand(s: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                // The value itself is not quoted back: it may be a password.
                .ok_or_else(|| {
                    "has a ${ without its closing }; close it, or write $${ for a literal ${"
                        .to_owned()
                })?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; export it or write ${{{name}:-default}}"
                    ))
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What the field asked the deserializer for: decides how a substituted value is read.
#[derive(Clone, Copy)]
enum Want {
    Bool,
    Signed,
    Unsigned,
    Float,
    Other,
}

/// A deserializer that substitutes `${VAR}` in every string value it yields.
pub(crate) struct Expand<'e, D> {
    pub de: D,
    pub env: Env<'e>,
}

struct Wrap<'e, V> {
    v: V,
    env: Env<'e>,
    want: Want,
}

impl<'e, V> Wrap<'e, V> {
    fn new(v: V, env: Env<'e>, want: Want) -> Self {
        Wrap { v, env, want }
    }
}

impl<'de, V: Visitor<'de>> Wrap<'_, V> {
    fn substituted<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        let x = expand(s, self.env).map_err(E::custom)?;
        let bad = |what: &str| E::custom(format!("{x:?} (from {s:?}) is not {what}"));
        match self.want {
            Want::Bool => match x.as_str() {
                "true" | "True" | "TRUE" => self.v.visit_bool(true),
                "false" | "False" | "FALSE" => self.v.visit_bool(false),
                _ => Err(bad("true or false")),
            },
            Want::Signed => match x.trim().parse::<i64>() {
                Ok(n) => self.v.visit_i64(n),
                Err(_) => Err(bad("a whole number")),
            },
            Want::Unsigned => match x.trim().parse::<u64>() {
                Ok(n) => self.v.visit_u64(n),
                Err(_) => Err(bad("a whole number")),
            },
            Want::Float => match x.trim().parse::<f64>() {
                Ok(n) => self.v.visit_f64(n),
                Err(_) => Err(bad("a number")),
            },
            Want::Other => self.v.visit_string(x),
        }
    }
}

macro_rules! forward_visit {
    ($($name:ident($ty:ty)),* $(,)?) => {$(
        fn $name<E: de::Error>(self, x: $ty) -> Result<Self::Value, E> {
            self.v.$name(x)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_borrowed_bytes<E: de::Error>(self, x: &'de [u8]) -> Result<V::Value, E> {
        self.v.visit_borrowed_bytes(x)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        if s.contains('$') {
            self.substituted(s)
        } else {
            self.v.visit_str(s)
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        if s.contains('$') {
            self.substituted(s)
        } else {
            self.v.visit_borrowed_str(s)
        }
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        if s.contains('$') {
            self.substituted(&s)
        } else {
            self.v.visit_string(s)
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.v.visit_some(Expand { de, env: self.env })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.v.visit_newtype_struct(Expand { de, env: self.env })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_seq(Access { a, env: self.env })
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_map(Access { a, env: self.env })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_enum(Access { a, env: self.env })
    }
}

/// Sequence, map, enum and variant access whose elements deserialize through [`Expand`].
struct Access<'e, A> {
    a: A,
    env: Env<'e>,
}

struct Seed<'e, S> {
    seed: S,
    env: Env<'e>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Expand { de, env: self.env })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.a.next_element_seed(Seed {
            seed,
            env: self.env,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.a.next_key_seed(Seed {
            seed,
            env: self.env,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.a.next_value_seed(Seed {
            seed,
            env: self.env,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

impl<'de, 'e, A: EnumAccess<'de>> EnumAccess<'de> for Access<'e, A> {
    type Error = A::Error;
    type Variant = Access<'e, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let env = self.env;
        let (v, a) = self.a.variant_seed(Seed { seed, env })?;
        Ok((v, Access { a, env }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.a.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.a.newtype_variant_seed(Seed {
            seed,
            env: self.env,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        self.a
            .tuple_variant(len, Wrap::new(v, self.env, Want::Other))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.a
            .struct_variant(fields, Wrap::new(v, self.env, Want::Other))
    }
}

/// Strings, structures and the like go to the same method of the YAML deserializer.
macro_rules! forward_de {
    ($($name:ident),* $(,)?) => {$(
        fn $name<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            self.de.$name(Wrap::new(v, self.env, Want::Other))
        }
    )*};
}

/// Numbers and booleans: the YAML deserializer refuses a `${VAR}` scalar for them before
/// a visitor sees it, so the scalar is taken as it is (`deserialize_any`: a plain `6543`
/// arrives as a number, `${PGPORT}` as a string to substitute and read as one).
macro_rules! scalar_de {
    ($($name:ident => $want:ident),* $(,)?) => {$(
        fn $name<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            self.de.deserialize_any(Wrap::new(v, self.env, Want::$want))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Expand<'_, D> {
    type Error = D::Error;

    scalar_de!(
        deserialize_bool => Bool,
        deserialize_i8 => Signed,
        deserialize_i16 => Signed,
        deserialize_i32 => Signed,
        deserialize_i64 => Signed,
        deserialize_i128 => Signed,
        deserialize_u8 => Unsigned,
        deserialize_u16 => Unsigned,
        deserialize_u32 => Unsigned,
        deserialize_u64 => Unsigned,
        deserialize_u128 => Unsigned,
        deserialize_f32 => Float,
        deserialize_f64 => Float,
    );

    forward_de!(
        deserialize_any,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_unit_struct(name, Wrap::new(v, self.env, Want::Other))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_newtype_struct(name, Wrap::new(v, self.env, Want::Other))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_tuple(len, Wrap::new(v, self.env, Want::Other))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_tuple_struct(name, len, Wrap::new(v, self.env, Want::Other))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_struct(name, fields, Wrap::new(v, self.env, Want::Other))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_enum(name, variants, Wrap::new(v, self.env, Want::Other))
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}
