//! ONNX models read and edited in memory, before a session is built of them.
//!
//! facegate's own model files never contain the recognizer's weights; a MAD model that reads
//! the recognizer's inner activations gets them from the recognizer file the service already
//! has: `with_outputs` declares those nodes as outputs (ONNX Runtime only returns a graph's
//! declared outputs). It appends to the file a second, tiny `ModelProto` whose graph holds
//! only those `output` entries: protobuf parses concatenated messages as one merged message
//! (an embedded message field seen twice is merged, repeated fields are appended), so the
//! model's own bytes stay exactly as they are and its graph gains the outputs.
//!
//! `input_names` and `metadata` read what a model declares before any session is built of
//! it, so that a model is edited first and given to ONNX Runtime once. The messages below
//! name only the fields facegate reads (numbers from onnx.proto); prost skips the rest.

use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the ONNX model has no graph")]
    NoGraph,
}

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

/// `TypeProto` with its `tensor_type` member (field 1 of the `value` oneof).
#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorType>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// `model` (a serialised ONNX ModelProto) with `names` appended to its graph's outputs, as
/// float tensors. Does not check that the names exist: ONNX Runtime refuses a model whose
/// outputs name no value, with the name in its message.
pub fn with_outputs(model: &[u8], names: &[&str]) -> Result<Vec<u8>, OnnxError> {
    ModelProto::decode(model)?.graph.ok_or(OnnxError::NoGraph)?;
    let outputs = ModelProto {
        graph: Some(GraphProto {
            input: Vec::new(),
            output: names
                .iter()
                .map(|name| ValueInfoProto {
                    name: name.to_string(),
                    r#type: Some(TypeProto {
                        tensor_type: Some(TensorType { elem_type: FLOAT }),
                    }),
                })
                .collect(),
        }),
        metadata_props: Vec::new(),
    };
    let mut out = Vec::with_capacity(model.len() + outputs.encoded_len());
    out.extend_from_slice(model);
    out.extend(outputs.encode_to_vec());
    Ok(out)
}

/// The names `model`'s graph declares as its inputs, in order.
pub fn input_names(model: &[u8]) -> Result<Vec<String>, OnnxError> {
    let graph = ModelProto::decode(model)?.graph.ok_or(OnnxError::NoGraph)?;
    Ok(graph.input.into_iter().map(|i| i.name).collect())
}

/// `model`'s metadata value for `key` (the last one, as ONNX Runtime reads it), if any.
pub fn metadata(model: &[u8], key: &str) -> Result<Option<String>, OnnxError> {
    Ok(ModelProto::decode(model)?
        .metadata_props
        .into_iter()
        .rev()
        .find(|e| e.key == key)
        .map(|e| e.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: None,
        }
    }

    /// A model with a graph of `inputs` and `outputs`, an initializer-like field the
    /// messages above do not name (field 5, raw bytes) and metadata.
    fn model(inputs: &[&str], outputs: &[&str], meta: &[(&str, &str)]) -> Vec<u8> {
        let m = ModelProto {
            graph: Some(GraphProto {
                input: inputs.iter().map(|n| info(n)).collect(),
                output: outputs.iter().map(|n| info(n)).collect(),
            }),
            metadata_props: meta
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        };
        let mut bytes = vec![0x08, 8]; // ir_version 8
        bytes.extend(m.encode_to_vec());
        bytes
    }

    #[test]
    fn appends_outputs_to_the_graph_and_keeps_every_byte_of_the_model() {
        let original = model(&["x"], &["y"], &[("producer", "p")]);
        let out = with_outputs(&original, &["473", "a long node name"]).unwrap();
        assert_eq!(&out[..original.len()], &original[..], "the model's own bytes come first, unchanged");
        let merged = ModelProto::decode(out.as_slice()).unwrap();
        let graph = merged.graph.unwrap();
        let outputs: Vec<_> = graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outputs, ["y", "473", "a long node name"]);
        assert_eq!(
            graph.output[1]
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .map(|t| t.elem_type),
            Some(FLOAT)
        );
        assert_eq!(graph.input.len(), 1);
        assert_eq!(merged.metadata_props.len(), 1);
    }

    #[test]
    fn reads_declared_inputs_and_metadata() {
        let m = model(
            &["image", "recognizer:632"],
            &["score"],
            &[
                ("other", "x"),
                ("facegate.embedding_sha256", "old"),
                ("facegate.embedding_sha256", "ab12"),
            ],
        );
        assert_eq!(input_names(&m).unwrap(), ["image", "recognizer:632"]);
        assert_eq!(metadata(&m, "facegate.embedding_sha256").unwrap().as_deref(), Some("ab12"));
        assert_eq!(metadata(&m, "absent").unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_a_model_with_a_graph() {
        assert!(matches!(with_outputs(&[0x3a, 0x05, 1], &["x"]), Err(OnnxError::Decode(_))));
        assert!(matches!(with_outputs(&[0x08, 8], &["x"]), Err(OnnxError::NoGraph)));
        assert!(matches!(input_names(&[0x0b]), Err(OnnxError::Decode(_))));
    }
}
