//! Every byte-level example in `docs/protocol.md` must be a message our decoder accepts and our
//! encoder would write the same way, so the document cannot drift from the code.

use tether_proto::{decode_message, encode, Message};

fn examples() -> Vec<(String, Message)> {
    let doc = include_str!("../../../docs/protocol.md");
    doc.lines()
        .filter_map(|line| line.strip_prefix("\\n{"))
        .map(|rest| {
            let json = format!(
                "{{{}",
                rest.strip_suffix("\\n").expect("example ends with \\n")
            );
            let message = decode_message(json.as_bytes())
                .unwrap_or_else(|e| panic!("example does not decode ({e}): {json}"));
            (json, message)
        })
        .collect()
}

#[test]
fn protocol_document_examples_decode_and_re_encode_identically() {
    let examples = examples();
    assert!(
        examples.len() >= 7,
        "expected the document's examples, found {}",
        examples.len()
    );
    for (json, message) in examples {
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sequence = u32::try_from(value["sequence"].as_u64().unwrap()).unwrap();
        let bytes = encode(sequence, &message);
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("\n{json}\n"));
    }
}
