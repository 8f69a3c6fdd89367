//! An ONNX model with some of its inner activations exposed as extra outputs.
//!
//! A MAD model may read the recognizer's feature maps (mad.rs). ONNX Runtime only returns
//! a graph's declared outputs, and the recognizer's weights are never copied into
//! facegate's own model files, so the service declares those nodes as outputs in memory,
//! on the recognizer file it already has, before building a session of it. This is a
//! protobuf edit of one repeated field: `ModelProto.graph` (field 7) gains
//! `GraphProto.output` entries (field 12), each a `ValueInfoProto` with the node's name
//! and float tensor type. Every other byte is copied as it is, so nothing else about the
//! model can change.

/// `model` (a serialised ONNX ModelProto) with `names` appended to its graph's outputs.
/// Does not check that the names exist: ONNX Runtime refuses a model whose outputs name
/// no value, with the name in its message.
pub fn with_outputs(model: &[u8], names: &[&str]) -> Result<Vec<u8>, String> {
    const GRAPH: u64 = 7;
    let mut out = Vec::with_capacity(model.len() + 32 * names.len());
    let mut graphs = 0;
    let mut rest = model;
    while !rest.is_empty() {
        let start = rest;
        let key = varint(&mut rest)?;
        let (field, wire) = (key >> 3, key & 7);
        let value = skip(&mut rest, wire)?;
        if field == GRAPH && wire == 2 {
            graphs += 1;
            let mut graph = value.to_vec();
            for name in names {
                field_bytes(&mut graph, 12, &value_info(name));
            }
            field_bytes(&mut out, GRAPH, &graph);
        } else {
            out.extend_from_slice(&start[..start.len() - rest.len()]);
        }
    }
    match graphs {
        1 => Ok(out),
        n => Err(format!("{n} graphs in the model, one expected")),
    }
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
    field_bytes(&mut info, 1, name.as_bytes());
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
    fn refuses_what_is_not_one_model() {
        assert!(with_outputs(&[0x3a, 0x05, 1], &["x"]).unwrap_err().contains("truncated"));
        assert!(with_outputs(&[1 << 3, 8], &["x"]).unwrap_err().contains("0 graphs"));
        assert!(with_outputs(&[0x0b], &["x"]).unwrap_err().contains("wire type 3"));
    }
}
