//! Tests of `apiserver::selector`: kube's grammar, matching and messages, and a round trip.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn parse_error(selector: &str) -> String {
    LabelSelector::parse(selector).unwrap_err().to_string()
}

#[test]
fn label_selector_operators_match_as_kube() {
    let web = labels(&[("app", "web"), ("tier", "fe"), ("replicas", "3")]);
    let cases = [
        ("", true),
        ("app=web", true),
        ("app==web", true),
        ("app!=web", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("app in (db,web)", true),
        ("app in (db)", false),
        ("app notin (db)", true),
        ("missing notin (db)", true),
        ("missing in (db)", false),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("app=web,tier=fe", true),
        ("app=web,tier=be", false),
        ("replicas>2", true),
        ("replicas<3", false),
        ("app>1", false),
        ("  app = web ,  tier in ( fe , be ) ", true),
        ("missing=", false),
        ("missing in ()", false),
        ("x in (in,notin)", false),
    ];
    for (selector, expected) in cases {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(parsed.matches(&web), expected, "{selector}");
    }
    // An empty value selects an empty label value.
    let empty = labels(&[("a", "")]);
    assert!(LabelSelector::parse("a=").unwrap().matches(&empty));
    assert!(LabelSelector::parse("a in ()").unwrap().matches(&empty));
    assert!(LabelSelector::parse("a in (x,)").unwrap().matches(&empty));
}

#[test]
fn label_selector_requirements_are_sorted_by_key_with_sorted_values() {
    let parsed = LabelSelector::parse("z in (b,a,b),a!=1,!m").unwrap();
    assert_eq!(parsed.to_string(), "a!=1,!m,z in (a,b)");
    assert_eq!(parsed.requirements()[2].values, ["a", "b"]);
    assert_eq!(
        parsed.requirements()[1].operator,
        LabelOperator::DoesNotExist
    );
}

#[test]
fn label_selector_errors_are_kubes() {
    // Upstream's message has no comma here.
    assert_eq!(
        parse_error("a in"),
        "unable to parse requirement: found '' expected: '('"
    );
    assert_eq!(
        parse_error("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(
        parse_error("a,"),
        "found '', expected: identifier after ','"
    );
    assert_eq!(
        parse_error("a=b c"),
        "found 'c', expected: ',' or 'end of string'"
    );
    assert_eq!(
        parse_error("=a"),
        "found '=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        parse_error("a in (b"),
        "unable to parse requirement: found '', expected: ',' or ')'"
    );
    assert_eq!(
        parse_error("a in (b c)"),
        "unable to parse requirement: found 'c', expected: ',' or ')'"
    );
    assert_eq!(
        parse_error("!a=b"),
        "found '=', expected: ',' or 'end of string'"
    );
    assert_eq!(
        parse_error("-a=b"),
        "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of \
         alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
         character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
         '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    assert_eq!(
        parse_error("a=-b"),
        "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be \
         an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start \
         and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
         regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
    assert_eq!(
        parse_error("a>b"),
        "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, \
         the value must be an integer"
    );
    let long_key = "k".repeat(64);
    assert!(parse_error(&long_key).contains("name part must be no more than 63 characters"));
    assert!(parse_error("example.com/").contains("name part must be non-empty"));
    assert!(parse_error("a/b/c").contains("a qualified name must consist of"));
    // A prefixed key is fine.
    assert!(LabelSelector::parse("example.com/app=x").is_ok());
}

#[test]
fn field_selectors_parse_match_and_escape() {
    let pod = json!({
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"nodeName": "node1", "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}]}
    });
    let value_of = |field: &str| field_value("Pod", &pod, field);
    let matches = |selector: &str| FieldSelector::parse(selector).unwrap().matches(&value_of);
    assert!(matches(""));
    assert!(matches("metadata.name=web"));
    assert!(matches("metadata.name==web,metadata.namespace=demo"));
    assert!(!matches("metadata.name!=web"));
    assert!(matches("spec.nodeName=node1,status.phase!=Pending"));
    assert!(matches("spec.host=node1"));
    assert!(matches("status.podIP=10.0.0.7"));
    // An unset field reads as "", as the scheduler's `spec.nodeName=` relies on.
    assert!(matches("status.nominatedNodeName="));
    assert!(!matches("spec.schedulerName=default-scheduler"));

    let parsed = FieldSelector::parse(r"b=x\,y,a==p\=q\\r").unwrap();
    assert_eq!(parsed.requirements()[0].field, "a");
    assert_eq!(
        parsed.requirements()[0].operator,
        FieldOperator::DoubleEquals
    );
    assert_eq!(parsed.requirements()[0].value, r"p=q\r");
    assert_eq!(parsed.requirements()[1].value, "x,y");
    assert_eq!(parsed.to_string(), r"a==p\=q\\r,b=x\,y");
}

#[test]
fn field_selector_errors_are_kubes() {
    let error = |selector: &str| FieldSelector::parse(selector).unwrap_err().to_string();
    assert_eq!(
        error("a=b,c"),
        "invalid selector: 'a=b,c'; can't understand 'c'"
    );
    assert_eq!(
        error(r"a=b\x"),
        r"invalid field selector: invalid escape sequence: \x"
    );
    assert_eq!(
        error(r"a=b\"),
        r"invalid field selector: invalid escape sequence: \"
    );
    assert_eq!(
        error("a=b=c"),
        "invalid field selector: unescaped character in value: 61"
    );
    let selector = FieldSelector::parse("spec.foo=x,metadata.name=y").unwrap();
    assert_eq!(
        selector.check_supported("Pod").unwrap_err().to_string(),
        "field label not supported: spec.foo"
    );
    assert!(
        FieldSelector::parse("metadata.name=x")
            .unwrap()
            .check_supported("ConfigMap")
            .is_ok()
    );
    assert!(
        FieldSelector::parse("metadata.namespace=x")
            .unwrap()
            .check_supported("Node")
            .is_err()
    );
}

#[test]
fn supported_fields_and_values_per_kind() {
    assert!(supported_fields("Pod").contains(&"spec.nodeName"));
    assert!(supported_fields("Event").contains(&"involvedObject.uid"));
    assert_eq!(
        supported_fields("ConfigMap"),
        ["metadata.name", "metadata.namespace"]
    );
    assert_eq!(
        supported_fields("Node"),
        ["metadata.name", "spec.unschedulable"]
    );
    assert_eq!(
        supported_fields("Secret"),
        ["metadata.name", "metadata.namespace", "type"]
    );

    let node = json!({"metadata": {"name": "n1"}, "spec": {}});
    assert_eq!(
        field_value("Node", &node, "spec.unschedulable").as_deref(),
        Some("false")
    );
    let cordoned = json!({"spec": {"unschedulable": true}});
    assert_eq!(
        field_value("Node", &cordoned, "spec.unschedulable").as_deref(),
        Some("true")
    );
    let event = json!({
        "involvedObject": {"kind": "Pod", "name": "web", "uid": "u-1"},
        "source": {"component": "scheduler"}, "type": "Warning", "reason": "FailedScheduling"
    });
    assert_eq!(
        field_value("Event", &event, "involvedObject.uid").as_deref(),
        Some("u-1")
    );
    assert_eq!(
        field_value("Event", &event, "source").as_deref(),
        Some("scheduler")
    );
    assert_eq!(
        field_value("Event", &event, "involvedObject.fieldPath").as_deref(),
        Some("")
    );
    assert_eq!(
        field_value("Secret", &json!({"type": "Opaque"}), "type").as_deref(),
        Some("Opaque")
    );
    assert_eq!(field_value("ConfigMap", &json!({}), "spec.nodeName"), None);
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,6}",
        "[a-z]{1,4}\\.io/[a-z][a-z0-9._-]{0,5}[a-z0-9]"
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,6}[A-Za-z0-9])?"
    ]
}

fn requirement() -> impl Strategy<Value = LabelRequirement> {
    let operator = prop_oneof![
        Just(LabelOperator::Equals),
        Just(LabelOperator::DoubleEquals),
        Just(LabelOperator::NotEquals),
        Just(LabelOperator::In),
        Just(LabelOperator::NotIn),
        Just(LabelOperator::Exists),
        Just(LabelOperator::DoesNotExist),
    ];
    (
        label_key(),
        operator,
        prop::collection::btree_set(label_value(), 1..4),
    )
        .prop_map(|(key, operator, values)| {
            let values: Vec<String> = match operator {
                LabelOperator::In | LabelOperator::NotIn => values.into_iter().collect(),
                LabelOperator::Exists | LabelOperator::DoesNotExist => Vec::new(),
                _ => values.into_iter().take(1).collect(),
            };
            LabelRequirement {
                key,
                operator,
                values,
            }
        })
}

proptest! {
    #[test]
    fn label_selector_round_trips_through_its_text(
        requirements in prop::collection::vec(requirement(), 0..5),
        pairs in prop::collection::btree_map(label_key(), label_value(), 0..5),
    ) {
        let text: Vec<String> = requirements.iter().map(ToString::to_string).collect();
        let text = text.join(",");
        let parsed = LabelSelector::parse(&text).unwrap();
        let reparsed = LabelSelector::parse(&parsed.to_string()).unwrap();
        prop_assert_eq!(&reparsed, &parsed);
        // Parsing keeps each requirement's meaning: the selector is their AND.
        let expected = requirements.iter().all(|requirement| requirement.matches(&pairs));
        prop_assert_eq!(parsed.matches(&pairs), expected);
    }

    #[test]
    fn field_selector_values_round_trip_through_escaping(value in "[a-z=,\\\\ ]{0,8}") {
        let text = format!("metadata.name={}", escape_value(&value));
        let parsed = FieldSelector::parse(&text).unwrap();
        prop_assert_eq!(&parsed.requirements()[0].value, &value);
        prop_assert_eq!(parsed.to_string(), text);
    }
}

proptest! {
    /// Whatever the text, parsing answers a selector or an error, never a panic.
    #[test]
    fn any_selector_text_parses_or_errs(text in "[a-z =!(),<>\\\\.\\-/\\t\\x00é]{0,24}") {
        let _ = LabelSelector::parse(&text);
        let _ = FieldSelector::parse(&text);
    }
}
