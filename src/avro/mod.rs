//! Avro: the key and envelope schemas of each table, the schema registry client, and the
//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary body).

pub mod encode;
pub mod envelope;
pub mod fields;
pub mod policy;
pub mod registry;
pub mod schema;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use crate::error::{Error, Result};

/// A schema with its registry id, ready to encode values.
pub struct Registered {
    pub id: u32,
    schema: &'static Schema,
    names: encode::Names,
    /// apache-avro's writer, to cross-check our encoder in debug builds.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    writer: GenericDatumWriter<'static>,
}

impl Registered {
    /// The writer resolves the schema's names once, not per event. It borrows the schema for
    /// the life of the process: one schema per table version, a bounded amount.
    pub fn new(id: u32, schema: Schema) -> Result<Self> {
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let writer = GenericDatumWriter::builder(schema).build().map_err(|e| {
            Error::permanent(format!(
                "internal error: Avro schema {id} does not resolve: {e}"
            ))
        })?;
        let names = encode::Names::of(schema).map_err(|e| {
            Error::permanent(format!(
                "internal error: Avro schema {id} does not resolve: {e}"
            ))
        })?;
        Ok(Registered {
            id,
            schema,
            names,
            writer,
        })
    }

    /// Encodes `value` in the Confluent wire format, refusing a value that does not fit the
    /// schema.
    pub fn encode(&self, value: Value, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        encode::write(&value, self.schema, &self.names, None, &mut out).map_err(|e| {
            Error::permanent(format!(
                "{}: value does not fit its Avro schema: {e}",
                what()
            ))
        })?;
        #[cfg(debug_assertions)]
        {
            let mut check = vec![0];
            check.extend_from_slice(&self.id.to_be_bytes());
            if let Err(e) = self.writer.write_value_ref(&mut check, &value) {
                panic!("apache-avro refuses what pgcdc's encoder wrote: {e}");
            }
            assert_eq!(
                out, check,
                "pgcdc's Avro encoder differs from apache-avro's"
            );
        }
        Ok(out)
    }
}
