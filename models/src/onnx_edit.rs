//! ONNX models edited in memory, as protobuf, before a session is built of them.
//!
//! facegate's own model files never contain the recognizer's weights; a MAD model that reads
//! the recognizer gets what it needs from the recognizer file the service already has:
//!
//! - `with_outputs`: inner activations of the recognizer (mad.rs reads its feature maps). ONNX
//!   Runtime only returns a graph's declared outputs, so those nodes are declared as outputs:
//!   `ModelProto.graph` (field 7) gains `GraphProto.output` entries (field 12), each a
//!   `ValueInfoProto` with the node's name and float tensor type.
//! - `with_weights`: recognizer weights a MAD model starts from (a fine-tuned copy of its last
//!   layers is shipped as the difference to them, tools/mad/ensemble.py). The model declares
//!   each as a graph input; the recognizer's initializer of that name is copied into the model's
//!   `GraphProto.initializer` (field 5) under the input's name and the input's declaration
//!   (`GraphProto.input`, field 11) dropped, so the weight is a constant and ONNX Runtime
//!   folds the sum once, at load.
//!
//! Every other byte is copied as it is, so nothing else about either model can change.
//!
//! `input_names` and `metadata` read what a model declares before any session is built of it,
//! so that a model is edited first and given to ONNX Runtime once.

const GRAPH: u64 = 7; // ModelProto.graph
const METADATA_PROPS: u64 = 14; // ModelProto.metadata_props: StringStringEntryProto { key = 1, value = 2 }
const INITIALIZER: u64 = 5; // GraphProto.initializer
const INPUT: u64 = 11; // GraphProto.input
const OUTPUT: u64 = 12; // GraphProto.output
const TENSOR_NAME: u64 = 8; // TensorProto.name
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

/// `model` with initializers copied from `source` (another serialised ModelProto): for each
/// `(name, from)`, `source`'s initializer `from`, renamed `name`. Every `from` must exist.
pub fn with_weights(model: &[u8], source: &[u8], names: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut found: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    for_each_field(graph_of(source)?, |field, value| {
        if field == INITIALIZER {
            let name = string_field(value, TENSOR_NAME)?;
            for (slot, (to, from)) in found.iter_mut().zip(names) {
                if from.as_bytes() == name {
                    *slot = Some(renamed(value, to)?);
                }
            }
        }
        Ok(())
    })?;
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((_, from), _)| from.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!("no initializer named {missing:?}"));
    }
    edit_graph(model, |graph| {
        // The filled inputs are declared no more: ONNX Runtime treats an initializer that is
        // also an input as overridable, and leaves it out of constant folding.
        let mut kept = Vec::with_capacity(graph.len());
        walk(graph, |key, value, field| {
            let filled = key == INPUT << 3 | 2
                && names
                    .iter()
                    .any(|(to, _)| string_field(value, VALUE_INFO_NAME).is_ok_and(|n| n == to.as_bytes()));
            if !filled {
                kept.extend_from_slice(field);
            }
            Ok(())
        })?;
        *graph = kept;
        for tensor in found.iter().flatten() {
            field_bytes(graph, INITIALIZER, tensor);
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

/// A TensorProto with its name replaced: every other field copied as it is.
fn renamed(tensor: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(tensor.len() + name.len() + 4);
    walk(tensor, |key, _, field| {
        if key >> 3 != TENSOR_NAME {
            out.extend_from_slice(field);
        }
        Ok(())
    })?;
    field_bytes(&mut out, TENSOR_NAME, name.as_bytes());
    Ok(out)
}

/// `ValueInfoProto { name, type: TypeProto { tensor_type: { elem_type: FLOAT } } }`.
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

    /// A TensorProto: dims, data type float, name, raw data.
    fn tensor(name: &str, raw: &[u8]) -> Vec<u8> {
        let mut t = vec![1 << 3, raw.len() as u8 / 4, 2 << 3, 1];
        field_bytes(&mut t, TENSOR_NAME, name.as_bytes());
        field_bytes(&mut t, 9, raw);
        t
    }

    fn model_with(initializers: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        field_bytes(&mut graph, 2, b"g");
        for t in initializers {
            field_bytes(&mut graph, INITIALIZER, t);
        }
        let mut model = vec![1 << 3, 8];
        field_bytes(&mut model, GRAPH, &graph);
        model
    }

    #[test]
    fn copies_named_weights_from_another_model_under_new_names() {
        let source = model_with(&[tensor("a", &[1, 2, 3, 4]), tensor("632", &[5, 6, 7, 8, 9, 10, 11, 12])]);
        let mut model = model_with(&[tensor("delta:632", &[0; 8])]);
        // Declared inputs: the image and the weight to fill.
        let graph = fields(&model)[1].1.clone();
        let mut declared = graph.clone();
        field_bytes(&mut declared, INPUT, &value_info("image"));
        field_bytes(&mut declared, INPUT, &value_info("recognizer_weight:632"));
        model = vec![1 << 3, 8];
        field_bytes(&mut model, GRAPH, &declared);
        let names = [("recognizer_weight:632".to_string(), "632".to_string())];
        let out = with_weights(&model, &source, &names).unwrap();
        let g = fields(&fields(&out)[1].1);
        let inputs: Vec<_> = g.iter().filter(|(f, _)| *f == INPUT).map(|(_, v)| fields(v)[0].1.clone()).collect();
        assert_eq!(inputs, [b"image".to_vec()], "the filled input is declared no more");
        let inits: Vec<_> = g.iter().filter(|(f, _)| *f == INITIALIZER).map(|(_, v)| fields(v)).collect();
        assert_eq!(inits.len(), 2, "the model's own initializer and the copied one");
        assert_eq!(inits[0], fields(&tensor("delta:632", &[0; 8])), "the model's own is unchanged");
        let copied = &inits[1];
        assert_eq!(copied.iter().find(|(f, _)| *f == TENSOR_NAME).unwrap().1, b"recognizer_weight:632");
        assert_eq!(
            copied.iter().find(|(f, _)| *f == 9).unwrap().1,
            [5, 6, 7, 8, 9, 10, 11, 12],
            "the data as the source has it"
        );
        assert_eq!(copied.len(), 4, "dims, type, data and one name");

        let missing = [("recognizer_weight:x".to_string(), "x".to_string())];
        assert!(with_weights(&model, &source, &missing).unwrap_err().contains("\"x\""));
    }

    #[test]
    fn reads_declared_inputs_and_metadata() {
        let mut graph = Vec::new();
        field_bytes(&mut graph, 2, b"g");
        field_bytes(&mut graph, INPUT, &value_info("image"));
        field_bytes(&mut graph, INITIALIZER, &tensor("w", &[0; 4]));
        field_bytes(&mut graph, INPUT, &value_info("recognizer_weight:632"));
        let mut model = vec![1 << 3, 8];
        field_bytes(&mut model, GRAPH, &graph);
        for (key, value) in [("other", "x"), ("facegate.embedding_sha256", "ab12")] {
            let mut entry = Vec::new();
            field_bytes(&mut entry, 1, key.as_bytes());
            field_bytes(&mut entry, 2, value.as_bytes());
            field_bytes(&mut model, METADATA_PROPS, &entry);
        }
        assert_eq!(input_names(&model).unwrap(), ["image", "recognizer_weight:632"]);
        assert_eq!(metadata(&model, "facegate.embedding_sha256").unwrap().as_deref(), Some("ab12"));
        assert_eq!(metadata(&model, "absent").unwrap(), None);
        assert!(input_names(&[1 << 3, 8]).unwrap_err().contains("0 graphs"));
    }

    #[test]
    fn refuses_what_is_not_one_model() {
        assert!(with_outputs(&[0x3a, 0x05, 1], &["x"]).unwrap_err().contains("truncated"));
        assert!(with_outputs(&[1 << 3, 8], &["x"]).unwrap_err().contains("0 graphs"));
        assert!(with_outputs(&[0x0b], &["x"]).unwrap_err().contains("wire type 3"));
        let names = [("w".to_string(), "w".to_string())];
        assert!(with_weights(&model_with(&[]), &[1 << 3, 8], &names)
            .unwrap_err()
            .contains("0 graphs"));
    }
}
