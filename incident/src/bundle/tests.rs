use super::*;

fn small() -> Bundle {
    Bundle {
        header: Header {
            name: "t".into(),
            from_ms: 1000,
            to_ms: 61_000,
            recorded_at_ms: 62_000,
            reason: "manual".into(),
            service: None,
            incident_ms: None,
            lead_in_ms: 0,
            logs_query: None,
            no_spans: false,
            keel_version: "test".into(),
        },
        config: Config::default(),
        files: vec![File {
            kind: "rules".into(),
            name: "r.yml".into(),
            text: "groups: []\n".into(),
        }],
        series: vec![Series {
            labels: [("__name__".to_owned(), "up".to_owned())].into(),
            samples: vec![
                (1000, 1.0),
                (16_000, -0.0),
                (31_000, f64::INFINITY),
                (46_000, keel_core::stale::marker()),
                (47_000, 0.1 + 0.2),
            ],
        }],
        logs: Vec::new(),
        spans: Vec::new(),
        marks: vec![keel_core::marks::Mark::Arrival {
            at_ms: 1001,
            sources: vec![("a".into(), "b".into(), 1000)],
        }],
        events: vec![serde_json::json!({"kind": "scale"})],
        alerts: Vec::new(),
        pages: Vec::new(),
    }
}

fn bytes(b: &Bundle) -> Vec<u8> {
    let mut out = Vec::new();
    b.write_to(&mut out).expect("write");
    out
}

#[test]
fn a_bundle_reads_back_bit_for_bit() {
    let b = small();
    let back = Bundle::read_from(&bytes(&b)[..], "x").expect("read");
    let (got, want) = (&back.series[0].samples, &b.series[0].samples);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1.to_bits()), (w.0, w.1.to_bits()));
    }
    assert_eq!(back.header, b.header);
    assert_eq!(back.marks, b.marks);
    assert_eq!(back.events, b.events);
    assert_eq!(back.files, b.files);
}

#[test]
fn truncated_corrupt_and_foreign_files_are_refused_by_name() {
    let all = bytes(&small());
    for cut in [all.len() - 1, all.len() / 2, 20] {
        let e = Bundle::read_from(&all[..cut], "b.keelinc").expect_err("cut");
        let msg = e.to_string();
        assert!(
            msg.starts_with("b.keelinc: ")
                && (msg.contains("truncated") || msg.contains("corrupt")),
            "{msg}"
        );
    }
    let mut flipped = all.clone();
    let i = flipped.len() - 10;
    flipped[i] ^= 0x55;
    let msg = Bundle::read_from(&flipped[..], "b.keelinc")
        .expect_err("flipped")
        .to_string();
    assert!(
        msg.contains("corrupt") || msg.contains("truncated"),
        "{msg}"
    );
    let msg = Bundle::read_from(&b"keel-incident 9\nxx"[..], "b.keelinc")
        .expect_err("version")
        .to_string();
    assert!(msg.contains("format version 9"), "{msg}");
    let msg = Bundle::read_from(&b"{\"groups\": []}\n"[..], "b.keelinc")
        .expect_err("foreign")
        .to_string();
    assert!(msg.contains("not a Keel incident bundle"), "{msg}");
}
