//! ONNX models edited in memory, as protobuf, before a session is built of them.
//!
//! facegate's own model files never contain the recognizer's weights; a MAD model that reads
//! the recognizer's inner activations gets them from the recognizer file the service already
//! has: `with_outputs` declares those nodes as outputs (ONNX Runtime only returns a graph's
//! declared outputs): `ModelProto.graph` (field 7) gains `GraphProto.output` entries (field
//! 12), each a `ValueInfoProto` with the node's name and float tensor type. Every other byte
//! is copied as it is, so nothing else about the model can change.
//!
//! `input_names` and `metadata` read what a model declares before any session is built of it,
//! so that a model is edited first and given to ONNX Runtime once.

const GRAPH: u64 = 7; // ModelProto.graph
const METADATA_PROPS: u64 = 14; // ModelProto.metadata_props: StringStringEntryProto { key = 1, value = 2 }
const INPUT: u64 = 11; // GraphProto.input
const OUTPUT: u64 = 12; // GraphProto.output
const VALUE_INFO_NAME: u64 = 1; // ValueInfoProto.name

/// `model` (a serialised ONNX ModelProto) with `names` appended to its graph's outputs.
/// Does not check that the names exist: ONNX Runtime refuses a model whose outputs name
/// no value, with the name in its message.
pub fn with_outputs(model: &[u8], names: &[&str]) -> Result<Vec<u8>, String> {
    edit_graph(model, |graph| {
        for name in names {
            field_bytes(graph, OUTPUT, &value_info(name));
        }
        Ok(())
    })
}

/// The names `model`'s graph declares as its inputs, in order.
pub fn input_names(model: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for_each_field(graph_of(model)?, |field, value| {
        if field == INPUT {
            names.push(String::from_utf8_lossy(string_field(value, VALUE_INFO_NAME)?).into_owned());
        }
        Ok(())
    })?;
    Ok(names)
}

/// `model`'s metadata value for `key` (the last one, as ONNX Runtime reads it), if any.
pub fn metadata(model: &[u8], key: &str) -> Result<Option<String>, String> {
    let mut found = None;
    for_each_field(model, |field, entry| {
        if field == METADATA_PROPS && string_field(entry, 1)? == key.as_bytes() {
            found = Some(String::from_utf8_lossy(string_field(entry, 2)?).into_owned());
        }
        Ok(())
    })?;
    Ok(found)
}

/// `model` with its one graph message extended by `edit` (fields appended after its own).
fn edit_graph(model: &[u8], edit: impl FnOnce(&mut Vec<u8>) -> Result<(), String>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(model.len() + 256);
    let mut edit = Some(edit);
    let mut graphs = 0;
    walk(model, |key, value, field| {
        if key == GRAPH << 3 | 2 {
            graphs += 1;
            let mut graph = value.to_vec();
            if let Some(edit) = edit.take() {
                edit(&mut graph)?;
            }
            field_bytes(&mut out, GRAPH, &graph);
        } else {
            out.extend_from_slice(field);
        }
        Ok(())
    })?;
    match graphs {
        1 => Ok(out),
        n => Err(format!("{n} graphs in the model, one expected")),
    }
}

/// The bytes of a model's one graph message.
fn graph_of(model: &[u8]) -> Result<&[u8], String> {
    let mut graph = None;
    let mut graphs = 0;
    for_each_field(model, |field, value| {
        if field == GRAPH {
            graphs += 1;
            graph = Some(value);
        }
        Ok(())
    })?;
    match (graphs, graph) {
        (1, Some(g)) => Ok(g),
        (n, _) => Err(format!("{n} graphs in the model, one expected")),
    }
}

/// Calls `f(key, value, field)` for each field of a message, in order: its key (field number
/// and wire type), a length-delimited value's bytes (empty for other wire types) and the
/// field's whole encoding, for copying it as it is.
fn walk<'a>(mut buf: &'a [u8], mut f: impl FnMut(u64, &'a [u8], &'a [u8]) -> Result<(), String>) -> Result<(), String> {
    while !buf.is_empty() {
        let start = buf;
        let key = varint(&mut buf)?;
        let value = skip(&mut buf, key & 7)?;
        f(key, value, &start[..start.len() - buf.len()])?;
    }
    Ok(())
}

/// Calls `f(field, value)` for each length-delimited field of a message; others are skipped.
fn for_each_field<'a>(buf: &'a [u8], mut f: impl FnMut(u64, &'a [u8]) -> Result<(), String>) -> Result<(), String> {
    walk(buf, |key, value, _| if key & 7 == 2 { f(key >> 3, value) } else { Ok(()) })
}

/// The last value of a string (or bytes) field of a message; empty if it has none, as
/// protobuf reads a missing string.
fn string_field(message: &[u8], field: u64) -> Result<&[u8], String> {
    let mut found: &[u8] = &[];
    for_each_field(message, |f, value| {
        if f == field {
            found = value;
        }
        Ok(())
    })?;
    Ok(found)
}

fn value_info(name: &str) -> Vec<u8> {
    const FLOAT: u64 = 1;
    let mut tensor = Vec::new();
    put_varint(&mut tensor, 1 << 3); // elem_type, varint
    put_varint(&mut tensor, FLOAT);
    let mut ty = Vec::new();
    field_bytes(&mut ty, 1, &tensor);
    let mut info = Vec::new();
    field_bytes(&mut info, VALUE_INFO_NAME, name.as_bytes());
    field_bytes(&mut info, 2, &ty);
    info
}

/// A length-delimited field.
fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Step over one field's value of wire type `wire`; returns a length-delimited value's bytes.
fn skip<'a>(buf: &mut &'a [u8], wire: u64) -> Result<&'a [u8], String> {
    let len = match wire {
        0 => {
            varint(buf)?;
            return Ok(&[]);
        }
        1 => 8,
        2 => usize::try_from(varint(buf)?).map_err(|_| "field too long")?,
        5 => 4,
        other => return Err(format!("wire type {other} is not used by ONNX")),
    };
    if buf.len() < len {
        return Err("truncated field".into());
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (field, value) pairs of a message, length-delimited values as bytes.
    fn fields(mut buf: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf).unwrap();
            let start = buf;
            let value = skip(&mut buf, key & 7).unwrap();
            let raw = if key & 7 == 2 {
                value.to_vec()
            } else {
                start[..start.len() - buf.len()].to_vec()
            };
            out.push((key >> 3, raw));
        }
        out
    }

    #[test]
    fn appends_outputs_to_the_graph_and_keeps_every_other_byte() {
        // ir_version 8, a graph named "g" with one output "y", producer "p" after it.
        let mut graph = Vec::new();
        field_bytes(&mut graph, 2, b"g");
        field_bytes(&mut graph, 12, &value_info("y"));
        let mut model = vec![1 << 3, 8];
        field_bytes(&mut model, 7, &graph);
        field_bytes(&mut model, 2, b"p");

        let out = with_outputs(&model, &["473", "a long node name"]).unwrap();
        let top = fields(&out);
        assert_eq!(top.iter().map(|(f, _)| *f).collect::<Vec<_>>(), [1, 7, 2]);
        assert_eq!((top[0].1.as_slice(), top[2].1.as_slice()), (&[8u8][..], &b"p"[..]));
        let g = fields(&top[1].1);
        let outputs: Vec<_> = g.iter().filter(|(f, _)| *f == 12).map(|(_, v)| fields(v)[0].1.clone()).collect();
        assert_eq!(outputs, [b"y".to_vec(), b"473".to_vec(), b"a long node name".to_vec()]);
        assert_eq!(g[0], (2, b"g".to_vec()), "the graph's own fields come first, unchanged");
    }

    #[test]
    fn reads_declared_inputs_and_metadata() {
        let mut graph = Vec::new();
        field_bytes(&mut graph, 2, b"g");
        field_bytes(&mut graph, INPUT, &value_info("image"));
        field_bytes(&mut graph, 5, b"an initializer, skipped");
        field_bytes(&mut graph, INPUT, &value_info("recognizer:632"));
        let mut model = vec![1 << 3, 8];
        field_bytes(&mut model, GRAPH, &graph);
        for (key, value) in [("other", "x"), ("facegate.embedding_sha256", "ab12")] {
            let mut entry = Vec::new();
            field_bytes(&mut entry, 1, key.as_bytes());
            field_bytes(&mut entry, 2, value.as_bytes());
            field_bytes(&mut model, METADATA_PROPS, &entry);
        }
        assert_eq!(input_names(&model).unwrap(), ["image", "recognizer:632"]);
        assert_eq!(metadata(&model, "facegate.embedding_sha256").unwrap().as_deref(), Some("ab12"));
        assert_eq!(metadata(&model, "absent").unwrap(), None);
        assert!(input_names(&[1 << 3, 8]).unwrap_err().contains("0 graphs"));
    }

    #[test]
    fn refuses_what_is_not_one_model() {
        assert!(with_outputs(&[0x3a, 0x05, 1], &["x"]).unwrap_err().contains("truncated"));
        assert!(with_outputs(&[1 << 3, 8], &["x"]).unwrap_err().contains("0 graphs"));
        assert!(with_outputs(&[0x0b], &["x"]).unwrap_err().contains("wire type 3"));
    }
}
