use super::*;

#[test]
fn expanding_notation_matches_promtool_docs() {
    let v = |s: &str| expand_values(s).expect("valid");
    assert_eq!(v("-2+4x3"), [Some(-2.0), Some(2.0), Some(6.0), Some(10.0)]);
    assert_eq!(v("1-2x2"), [Some(1.0), Some(-1.0), Some(-3.0)]);
    assert_eq!(v("5x2"), [Some(5.0), Some(5.0), Some(5.0)]);
    assert_eq!(v("1 _x3 2"), [Some(1.0), None, None, None, Some(2.0)]);
    assert_eq!(v("1e3+1e1x1"), [Some(1000.0), Some(1010.0)]);
    assert!(v("stale")[0].is_some_and(|x| x.to_bits() == STALE_NAN));
    assert!(expand_values("1+x").is_err());
}
