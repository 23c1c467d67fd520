//! Where another tool's schemas meet pgcdc's on the same subject (a takeover from Debezium):
//! a column both carry must mean the same on both sides of the seam. The registry's
//! compatibility check cannot see that: Debezium's `time.precision.mode: connect` writes a
//! timestamp as milliseconds in an Avro `long`, pgcdc as microseconds in an Avro `long`, and
//! BACKWARD accepts one after the other. The Kafka Connect type name (`connect.name`), the
//! logical type and the Avro type tell them apart.

use serde_json::Value as Json;

/// The columns of a key schema (a record) or a value schema (an envelope whose `after` is
/// a nullable record).
fn columns(schema: &Json) -> Vec<(String, &Json)> {
    // An envelope defines its row record in `before` (and names it in `after`).
    for side in ["before", "after"] {
        let row = schema["fields"].as_array().and_then(|fs| {
            fs.iter()
                .find(|f| f["name"] == side)
                .map(|f| non_null(&f["type"]))
                .filter(|t| t["type"] == "record")
        });
        if let Some(r) = row {
            return fields(r);
        }
    }
    fields(schema)
}

fn fields(record: &Json) -> Vec<(String, &Json)> {
    record["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| Some((f["name"].as_str()?.to_owned(), &f["type"])))
                .collect()
        })
        .unwrap_or_default()
}

/// The branch of `["null", T]` that is not null.
fn non_null(t: &Json) -> &Json {
    match t.as_array() {
        Some(branches) => branches
            .iter()
            .find(|b| b.as_str() != Some("null"))
            .unwrap_or(t),
        None => t,
    }
}

/// What a column's type means: Avro type, logical type and Kafka Connect type name.
fn meaning(t: &Json) -> String {
    let t = non_null(t);
    if let Some(s) = t.as_str() {
        return s.to_owned();
    }
    let avro = match &t["type"] {
        Json::String(s) if s == "array" => format!("array<{}>", meaning(&t["items"])),
        Json::String(s) if s == "map" => format!("map<{}>", meaning(&t["values"])),
        Json::String(s) => s.clone(),
        other => meaning(other),
    };
    let mut m = avro;
    if let Some(l) = t["logicalType"].as_str() {
        m += &format!(" logicalType {l}");
    }
    if let Some(n) = t["connect.name"].as_str() {
        m += &format!(" ({n})");
    }
    m
}

/// Whether a value schema is a change event envelope (`before`, `after`, `op`), not a row
/// an SMT such as `ExtractNewRecordState` flattened it to.
pub fn is_envelope(schema: &Json) -> bool {
    let names: Vec<&str> = schema["fields"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    ["before", "after", "op"].iter().all(|n| names.contains(n))
}

/// Columns both schemas carry whose meaning differs, one phrase each. Columns only one
/// side has are schema evolution (a column added or dropped since), not a mismatch.
pub fn mismatches(theirs: &Json, ours: &Json) -> Vec<String> {
    let ours = columns(ours);
    columns(theirs)
        .into_iter()
        .filter_map(|(name, t)| {
            let (_, o) = ours.iter().find(|(n, _)| *n == name)?;
            let (a, b) = (meaning(t), meaning(o));
            (a != b).then(|| format!("column {name} is {a} there, {b} from pgcdc"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(after_fields: Json) -> Json {
        json!({"type": "record", "name": "Envelope", "connect.name": "p.public.t.Envelope",
            "fields": [
                {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": after_fields}]},
                {"name": "after", "type": ["null", "Value"]},
                {"name": "op", "type": "string"}]})
    }

    #[test]
    fn a_timestamp_in_milliseconds_is_not_one_in_microseconds() {
        let ms = json!({"type": "long", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Timestamp", "logicalType": "timestamp-millis"});
        let us = json!({"type": "long", "connect.version": 1, "connect.name": "io.debezium.time.MicroTimestamp"});
        let theirs = json!({"type": "record", "name": "Envelope", "connect.name": "p.public.t.Envelope",
            "fields": [{"name": "after", "type": ["null", {"type": "record", "name": "Value", "fields": [
                {"name": "id", "type": "int"}, {"name": "at", "type": ["null", ms]}]}]}]});
        let ours = json!({"type": "record", "name": "Envelope", "connect.name": "p.public.t.Envelope",
            "fields": [{"name": "after", "type": ["null", {"type": "record", "name": "Value", "fields": [
                {"name": "id", "type": "int"}, {"name": "at", "type": ["null", us]}, {"name": "new", "type": "string"}]}]}]});
        let m = mismatches(&theirs, &ours);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("column at")
                && m[0].contains("timestamp-millis")
                && m[0].contains("MicroTimestamp"),
            "{m:?}"
        );
        assert!(mismatches(&ours, &ours).is_empty());
    }

    #[test]
    fn key_records_and_optional_columns_compare_by_meaning() {
        let key = |t: Json| json!({"type": "record", "name": "Key", "fields": [{"name": "id", "type": t}]});
        assert!(mismatches(&key(json!("int")), &key(json!(["null", "int"]))).is_empty());
        assert_eq!(
            mismatches(&key(json!("int")), &key(json!("string"))).len(),
            1
        );
        let dec = |p: &str| json!({"type": "bytes", "logicalType": "decimal", "connect.name": "org.apache.kafka.connect.data.Decimal", "precision": p});
        // precision and scale may change with an ALTER: the meaning is the same.
        assert!(mismatches(&key(dec("10")), &key(dec("12"))).is_empty());
        assert_eq!(mismatches(&key(dec("10")), &key(json!("double"))).len(), 1);
        // A real envelope: the row record in `before`, named in `after`.
        let e = |t: Json| envelope(json!([{"name": "id", "type": t}]));
        assert_eq!(mismatches(&e(json!("int")), &e(json!("long"))).len(), 1);
        assert!(mismatches(&e(json!("int")), &e(json!("int"))).is_empty());
        let flat =
            json!({"type": "record", "name": "Value", "fields": [{"name": "id", "type": "int"}]});
        assert!(!is_envelope(&flat));
        let env = envelope(json!([]));
        assert!(is_envelope(&env));
        let mut no_op = env.clone();
        no_op["fields"].as_array_mut().unwrap().pop();
        assert!(!is_envelope(&no_op), "without op");
    }
}
