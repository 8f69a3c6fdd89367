//! XML bodies of the biometric endpoints, written with quick-xml (escaping included), in
//! the element order of API.md.

use facegate_actors::Candidate;

use crate::routes::identify::IdentifiedFace;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

pub const CONTENT_TYPE: &str = "application/xml";

/// Scores: cosine clamped to [0, 1], three decimals.
pub fn score(s: f32) -> String {
    format!("{:.3}", s.clamp(0.0, 1.0))
}

/// Quality: [0, 1], two decimals.
pub fn quality(q: f32) -> String {
    format!("{:.2}", q.clamp(0.0, 1.0))
}

struct Doc(Writer<Vec<u8>>);

impl Doc {
    fn new() -> Self {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        // Writing to a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        Doc(w)
    }
    fn open(&mut self, name: &str) -> &mut Self {
        let _ = self.0.write_event(Event::Start(BytesStart::new(name)));
        self
    }
    fn close(&mut self, name: &str) -> &mut Self {
        let _ = self.0.write_event(Event::End(BytesEnd::new(name)));
        self
    }
    fn empty(&mut self, name: &str) -> &mut Self {
        let _ = self.0.write_event(Event::Empty(BytesStart::new(name)));
        self
    }
    fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.open(name);
        let _ = self.0.write_event(Event::Text(BytesText::new(value)));
        self.close(name)
    }
    fn finish(self) -> String {
        String::from_utf8_lossy(&self.0.into_inner()).into_owned()
    }
}

pub fn search(candidates: &[Candidate], quality_score: f32, model_id: &str) -> String {
    let mut d = Doc::new();
    d.open("SearchResponse").text("status", "OK");
    if candidates.is_empty() {
        d.empty("candidates");
    } else {
        d.open("candidates");
        for (i, c) in candidates.iter().enumerate() {
            d.open("candidate")
                .text("subject_id", &c.subject_id)
                .text("score", &score(c.score))
                .text("rank", &(i + 1).to_string())
                .close("candidate");
        }
        d.close("candidates");
    }
    d.text("quality_score", &quality(quality_score))
        .text("model_id", model_id)
        .close("SearchResponse");
    d.finish()
}

/// `<candidates>` as search writes them.
fn candidates(d: &mut Doc, candidates: &[Candidate]) {
    if candidates.is_empty() {
        d.empty("candidates");
        return;
    }
    d.open("candidates");
    for (i, c) in candidates.iter().enumerate() {
        d.open("candidate")
            .text("subject_id", &c.subject_id)
            .text("score", &score(c.score))
            .text("rank", &(i + 1).to_string())
            .close("candidate");
    }
    d.close("candidates");
}

/// Identify (ours): every analysed face, largest first, with its box, landmarks, gate
/// scores and either its candidates per partition or why it was not searched.
pub fn identify(detected: usize, faces: &[IdentifiedFace], model_id: &str) -> String {
    let px = |v: f32| format!("{:.0}", v.max(0.0));
    let mut d = Doc::new();
    d.open("IdentifyResponse")
        .text("status", "OK")
        .text("faces_detected", &detected.to_string());
    if faces.is_empty() {
        d.empty("faces");
    } else {
        d.open("faces");
        for (i, f) in faces.iter().enumerate() {
            let r = &f.report;
            let [x1, y1, x2, y2] = r.face.bbox;
            d.open("face").text("index", &(i + 1).to_string());
            d.open("box")
                .text("x", &px(x1))
                .text("y", &px(y1))
                .text("width", &px(x2 - x1))
                .text("height", &px(y2 - y1))
                .close("box");
            d.open("landmarks");
            for [x, y] in r.face.landmarks {
                d.open("point").text("x", &px(x)).text("y", &px(y)).close("point");
            }
            d.close("landmarks");
            d.text("detection_score", &score(r.face.score));
            if let Some(q) = r.quality {
                d.text("quality_score", &quality(q));
            }
            if let Some(p) = r.pad {
                d.text("pad_score", &score(p));
            }
            if let Some(live) = r.live {
                d.text("pad_decision", if live { "live" } else { "spoof" });
            }
            match &r.outcome {
                Ok(_) => {
                    d.text("searched", "true").open("partitions");
                    for (name, hits) in &f.hits {
                        d.open("partition").text("name", name);
                        candidates(&mut d, hits);
                        d.close("partition");
                    }
                    d.close("partitions");
                }
                Err(why) => {
                    d.text("searched", "false").text("not_searched", why.name());
                }
            }
            d.close("face");
        }
        d.close("faces");
    }
    d.text("model_id", model_id).close("IdentifyResponse");
    d.finish()
}

pub fn verify(matched: bool, s: f32, subject_id: &str, quality_score: f32, model_id: &str) -> String {
    let mut d = Doc::new();
    d.open("VerifyResponse")
        .text("status", "OK")
        .text("match", if matched { "true" } else { "false" })
        .text("score", &score(s))
        .text("subject_id", subject_id)
        .text("quality_score", &quality(quality_score))
        .text("model_id", model_id)
        .close("VerifyResponse");
    d.finish()
}

pub fn enrol(subject_id: &str, quality_score: f32, model_id: &str) -> String {
    let mut d = Doc::new();
    d.open("EnrolResponse")
        .text("status", "OK")
        .text("subject_id", subject_id)
        .text("quality_score", &quality(quality_score))
        .text("model_id", model_id)
        .close("EnrolResponse");
    d.finish()
}

pub fn delete(subject_id: &str) -> String {
    let mut d = Doc::new();
    d.open("DeleteResponse")
        .text("status", "OK")
        .text("subject_id", subject_id)
        .close("DeleteResponse");
    d.finish()
}

pub fn error(code: &str, message: &str, gate_score: Option<(&str, f32)>) -> String {
    let mut d = Doc::new();
    d.open("ErrorResponse").text("status", code).text("message", message);
    if let Some((name, value)) = gate_score {
        let v = if name == "quality_score" { quality(value) } else { score(value) };
        d.text(name, &v);
    }
    d.close("ErrorResponse");
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        let body = delete("<&\"'>");
        assert!(body.contains("<subject_id>&lt;&amp;&quot;&apos;&gt;</subject_id>"), "{body}");
    }

    #[test]
    fn elements_come_in_the_seed_order() {
        let body = search(
            &[Candidate {
                subject_id: "a".into(),
                score: 0.8234,
            }],
            0.871,
            "m",
        );
        let order = [
            "<SearchResponse>",
            "<status>OK",
            "<candidates>",
            "<candidate>",
            "<subject_id>a",
            "<score>0.823",
            "<rank>1",
            "<quality_score>0.87",
            "<model_id>m",
        ];
        let mut at = 0;
        for tag in order {
            let pos = body[at..]
                .find(tag)
                .unwrap_or_else(|| panic!("{tag} missing or out of order in {body}"));
            at += pos;
        }
        assert!(search(&[], 0.5, "m").contains("<candidates/>"));
    }

    #[test]
    fn scores_are_clamped() {
        assert_eq!(score(-0.2), "0.000");
        assert_eq!(score(1.2), "1.000");
    }
}
