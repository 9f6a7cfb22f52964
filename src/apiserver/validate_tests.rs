//! Tests of `apiserver::validate`: each rule with kube's exact text, the Status message, and
//! quantities.

use serde_json::{Value, json};

use super::*;

fn pod(name: &str, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"containers": containers}
    })
}

fn texts(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

const SUBDOMAIN_DETAIL: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[test]
fn a_valid_pod_has_no_errors() {
    let valid = pod(
        "web",
        json!([{"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1}}}]),
    );
    assert_eq!(texts(&validate("Pod", &valid)), Vec::<String>::new());
}

#[test]
fn missing_image_is_required_with_kubes_status_message() {
    let bad = pod("bad", json!([{"name": "a"}]));
    let errors = validate("Pod", &bad);
    assert_eq!(texts(&errors), ["spec.containers[0].image: Required value"]);
    assert_eq!(errors[0].kind.reason(), "FieldValueRequired");
    assert_eq!(errors[0].message(), "Required value");
    assert_eq!(
        invalid_status_message("Pod", "bad", &errors),
        "Pod \"bad\" is invalid: spec.containers[0].image: Required value"
    );
}

#[test]
fn several_errors_are_bracketed_in_the_status_message() {
    let bad = pod("bad", json!([{"name": "a"}, {"name": "a", "image": "x"}]));
    let errors = validate("Pod", &bad);
    assert_eq!(
        invalid_status_message("Pod", "bad", &errors),
        "Pod \"bad\" is invalid: [spec.containers[0].image: Required value, \
         spec.containers[1].name: Duplicate value: \"a\"]"
    );
    assert_eq!(errors[1].kind.reason(), "FieldValueDuplicate");
    assert_eq!(
        invalid_status_message("Pod", "x", &[]),
        "Pod \"x\" is invalid"
    );
}

#[test]
fn names_follow_the_kinds_rule() {
    let errors = validate(
        "Pod",
        &pod("Bad_Name", json!([{"name": "a", "image": "x"}])),
    );
    assert_eq!(
        texts(&errors),
        [format!(
            "metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_DETAIL}"
        )]
    );
    assert_eq!(errors[0].kind.reason(), "FieldValueInvalid");

    let namespace = json!({"metadata": {"name": "a.b"}});
    assert_eq!(
        texts(&validate("Namespace", &namespace)),
        ["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    let namespace = json!({"metadata": {"name": "UP"}});
    assert_eq!(
        texts(&validate("Namespace", &namespace)),
        [
            "metadata.name: Invalid value: \"UP\": a lowercase RFC 1123 label must consist of lower \
          case alphanumeric characters or '-', and must start and end with an alphanumeric \
          character (e.g. 'my-name',  or '123-abc', regex used for validation is \
          '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    let service =
        json!({"metadata": {"name": "1svc", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        texts(&validate("Service", &service)),
        [
            "metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of lower case \
          alphanumeric characters or '-', start with an alphabetic character, and end with an \
          alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
          '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    let long = "a".repeat(DNS1123_SUBDOMAIN_LENGTH_MAX + 1);
    let errors = validate(
        "ConfigMap",
        &json!({"metadata": {"name": long, "namespace": "d"}}),
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .detail
            .ends_with(": must be no more than 253 characters"),
        "{}",
        errors[0]
    );
}

#[test]
fn name_or_generate_name_is_required_and_generate_name_may_end_in_a_dash() {
    let errors = validate("ConfigMap", &json!({"metadata": {"namespace": "d"}}));
    assert_eq!(
        texts(&errors),
        ["metadata.name: Required value: name or generateName is required"]
    );
    let generated =
        json!({"metadata": {"generateName": "gen-", "name": "gen-x2b4c", "namespace": "d"}});
    assert!(validate("ConfigMap", &generated).is_empty());
    let errors = validate(
        "ConfigMap",
        &json!({"metadata": {"generateName": "Gen-", "name": "x", "namespace": "d"}}),
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().starts_with(
        "metadata.generateName: Invalid value: \"Gen-\": a lowercase RFC 1123 subdomain"
    ));
}

#[test]
fn namespace_scope_is_checked() {
    let errors = validate("ConfigMap", &json!({"metadata": {"name": "c"}}));
    assert_eq!(texts(&errors), ["metadata.namespace: Required value"]);
    let errors = validate(
        "Node",
        &json!({"metadata": {"name": "n", "namespace": "d"}}),
    );
    assert_eq!(
        texts(&errors),
        ["metadata.namespace: Forbidden: not allowed on this type"]
    );
    assert_eq!(errors[0].kind.reason(), "FieldValueForbidden");
    assert!(validate("Node", &json!({"metadata": {"name": "node-1.example"}})).is_empty());
}

#[test]
fn labels_annotations_and_finalizers() {
    let object = json!({"metadata": {"name": "c", "namespace": "d",
        "labels": {"ok": "fine", "bad key": "v", "k": "-bad"},
        "finalizers": ["kubernetes", "example.com/x", "custom"]}});
    assert_eq!(
        texts(&validate("ConfigMap", &object)),
        [
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character \
             (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            "metadata.finalizers: Invalid value: \"custom\": name is neither a standard finalizer \
             name nor is it fully qualified",
        ]
    );

    let big = "x".repeat(ANNOTATIONS_TOTAL_BYTES_MAX);
    let object = json!({"metadata": {"name": "c", "namespace": "d",
        "annotations": {"Example.COM/Mixed-Case": "ok", "big": big}}});
    let errors = validate("ConfigMap", &object);
    assert_eq!(
        texts(&errors),
        ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );
    assert_eq!(errors[0].kind.reason(), "FieldValueTooLong");
}

#[test]
fn pod_spec_rules() {
    let errors = validate(
        "Pod",
        &json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {}}),
    );
    assert_eq!(texts(&errors), ["spec.containers: Required value"]);

    let bad = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
        "restartPolicy": "Sometimes",
        "initContainers": [{"name": "a", "image": "x"}],
        "containers": [
            {"name": "a", "image": " x"},
            {"image": "y", "ports": [{"containerPort": 70000}, {"protocol": "ICMP", "containerPort": 1}]},
            {"name": "c", "image": "z", "resources": {
                "requests": {"cpu": "2", "memory": "abc", "nvidia.com/gpu": "-1"},
                "limits": {"cpu": "1"}}}
        ]
    }});
    assert_eq!(
        texts(&validate("Pod", &bad)),
        [
            "spec.containers[1].name: Required value",
            "spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[1].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[2].resources.requests[memory]: Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[2].resources.requests[nvidia.com/gpu]: Invalid value: \"-1\": must be greater than or equal to 0",
            "spec.containers[2].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.initContainers[0].name: Duplicate value: \"a\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace",
        ]
    );

    let ports = pod(
        "p",
        json!([{"name": "a", "image": "x", "ports": [
        {"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81},
        {"name": "Web", "containerPort": 82}
    ]}, {"name": "", "image": "y"}, {"image": "z"}]),
    );
    assert_eq!(
        texts(&validate("Pod", &ports)),
        [
            "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
            "spec.containers[0].ports[2].name: Invalid value: \"Web\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[1].name: Required value",
            "spec.containers[2].name: Required value",
            "spec.containers[2].name: Duplicate value: \"\"",
        ]
    );
}

fn deployment(selector: Value, template_labels: Value, replicas: i64) -> Value {
    json!({"metadata": {"name": "d", "namespace": "demo"}, "spec": {
        "replicas": replicas, "selector": selector,
        "template": {"metadata": {"labels": template_labels},
                     "spec": {"containers": [{"name": "a", "image": "nginx"}]}}
    }})
}

#[test]
fn deployment_rules() {
    let valid = deployment(
        json!({"matchLabels": {"app": "d"}}),
        json!({"app": "d", "x": "y"}),
        2,
    );
    assert!(validate("Deployment", &valid).is_empty());
    let by_expression = deployment(
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["d", "e"]}]}),
        json!({"app": "e"}),
        1,
    );
    assert!(validate("Deployment", &by_expression).is_empty());

    let mismatch = deployment(
        json!({"matchLabels": {"app": "d"}}),
        json!({"app": "other"}),
        -1,
    );
    let errors = validate("Deployment", &mismatch);
    assert_eq!(
        texts(&errors),
        [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: \
             `selector` does not match template `labels`",
        ]
    );
    assert!(
        invalid_status_message("Deployment", "d", &errors)
            .starts_with("Deployment.apps \"d\" is invalid: [spec.replicas: Invalid value: -1")
    );

    let mut no_selector = valid.clone();
    no_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    assert_eq!(
        texts(&validate("Deployment", &no_selector)),
        ["spec.selector: Required value"]
    );
    let empty = deployment(json!({}), json!({"app": "d"}), 1);
    assert_eq!(
        texts(&validate("Deployment", &empty)),
        ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );
    let mut never = valid.clone();
    never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        texts(&validate("Deployment", &never)),
        [
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
    let mut no_image = valid;
    no_image["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    assert_eq!(
        texts(&validate("Deployment", &no_image)),
        ["spec.template.spec.containers[0].image: Required value"]
    );
}

#[test]
fn service_rules() {
    let service = |spec: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "spec": spec});
    assert!(
        validate(
            "Service",
            &service(json!({"ports": [{"port": 80, "targetPort": "http"}]}))
        )
        .is_empty()
    );
    assert_eq!(
        texts(&validate("Service", &service(json!({})))),
        ["spec.ports: Required value"]
    );
    assert!(validate("Service", &service(json!({"type": "ExternalName"}))).is_empty());
    assert_eq!(
        texts(&validate(
            "Service",
            &service(json!({"type": "Magic", "ports": [
                {"port": 0, "name": "a"}, {"port": 80, "name": "a", "targetPort": 99999},
                {"port": 81, "targetPort": "Bad--name"}
            ]}))
        )),
        [
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].name: Duplicate value: \"a\"",
            "spec.ports[1].targetPort: Invalid value: 99999: must be between 1 and 65535, inclusive",
            "spec.ports[2].name: Required value",
            "spec.ports[2].targetPort: Invalid value: \"Bad--name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[2].targetPort: Invalid value: \"Bad--name\": must not contain consecutive hyphens",
        ]
    );
}

#[test]
fn config_map_and_secret_keys() {
    let config_map = json!({"metadata": {"name": "c", "namespace": "d"},
        "data": {"good.key": "v", "bad key": "v", "..x": "v"}, "binaryData": {"good.key": "AAAA"}});
    assert_eq!(
        texts(&validate("ConfigMap", &config_map)),
        [
            "data[..x]: Invalid value: \"..x\": must not start with '..'",
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of \
             alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or \
             'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            "data[good.key]: Invalid value: \"good.key\": duplicate of key present in binaryData",
        ]
    );
    let secret = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque",
        "data": {"pw": "c2VjcmV0"}, "stringData": {"a/b": "x"}});
    let errors = validate("Secret", &secret);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("stringData[a/b]: Invalid value: \"a/b\": a valid config key")
    );
    let big = json!({"metadata": {"name": "c", "namespace": "d"},
        "data": {"k": "x".repeat(CONFIG_DATA_BYTES_MAX + 1)}});
    assert_eq!(
        texts(&validate("ConfigMap", &big)),
        [": Too long: may not be more than 1048576 bytes"]
    );
}

#[test]
fn field_error_constructors_render_as_kube() {
    let error = FieldError::required("metadata.name", "name or generateName is required");
    assert_eq!(
        error.message(),
        "Required value: name or generateName is required"
    );
    let error = FieldError::invalid("spec.x", &BadValue::Str("a\"b"), "bad");
    assert_eq!(error.to_string(), "spec.x: Invalid value: \"a\\\"b\": bad");
    assert_eq!(
        FieldErrorKind::NotSupported.reason(),
        "FieldValueNotSupported"
    );
}

#[test]
fn quantities_parse_to_milli_units_and_bytes() {
    let cases: &[(&str, i64, i64)] = &[
        ("100m", 1, 100),
        ("1", 1, 1000),
        ("0.5", 1, 500),
        ("1.5", 2, 1500),
        ("2k", 2000, 2_000_000),
        ("1Ki", 1024, 1_024_000),
        ("500Mi", 524_288_000, 524_288_000_000),
        ("1Gi", 1_073_741_824, 1_073_741_824_000),
        ("1e3", 1000, 1_000_000),
        ("1E", 1_000_000_000_000_000_000, i64::MAX),
        ("+3", 3, 3000),
        ("-1", -1, -1000),
        ("1n", 1, 1),
        ("0", 0, 0),
        ("0.0001", 1, 1),
        ("1.", 1, 1000),
        (".5", 1, 500),
        ("12e-1", 2, 1200),
        ("1Ei", 1_152_921_504_606_846_976, i64::MAX),
    ];
    for &(text, value, milli_value) in cases {
        let quantity = parse_quantity(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (quantity.value(), quantity.milli_value()),
            (value, milli_value),
            "{text}"
        );
        assert_eq!(quantity.as_str(), text);
    }
    assert!(parse_quantity("-1").unwrap().is_negative());
    assert!(!parse_quantity("0").unwrap().is_negative());
    let long = format!("0.{}1", "0".repeat(60));
    assert_eq!(parse_quantity(&long).unwrap().milli_value(), 1);
    let long = format!("1{}", "0".repeat(40));
    assert_eq!(parse_quantity(&long).unwrap().value(), i64::MAX);
}

#[test]
fn bad_quantities_get_kubes_messages() {
    for text in ["", "abc", "1 Gi", "1.2.3", "-", "1x"] {
        assert_eq!(
            parse_quantity(text).unwrap_err().to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "{text:?}"
        );
    }
    for text in ["1K", "1mi", "1e", "1Gii", "1ee3"] {
        assert_eq!(
            parse_quantity(text).unwrap_err(),
            QuantityError::Suffix,
            "{text:?}"
        );
    }
    assert_eq!(
        QuantityError::Suffix.to_string(),
        "unable to parse quantity's suffix"
    );
}

proptest::proptest! {
    /// Whatever the text, quantity parsing answers a value or an error, never a panic, and a
    /// value's milli-value is a thousand times its value or saturated.
    #[test]
    fn any_quantity_text_parses_or_errs(text in "[-+0-9.eEinumkKMGTP ]{0,12}") {
        if let Ok(quantity) = parse_quantity(&text) {
            let (value, milli) = (quantity.value(), quantity.milli_value());
            proptest::prop_assert!(
                milli.unsigned_abs() <= value.unsigned_abs().saturating_mul(1000),
                "{text}: {value} {milli}"
            );
        }
    }

    /// Validation of any object shape answers a list, never a panic.
    #[test]
    fn validating_odd_shapes_never_panics(spec in proptest::prelude::any::<u8>()) {
        let shapes = [json!(null), json!([]), json!("x"), json!({"containers": "x"}),
            json!({"containers": [1, null, {"ports": "x", "resources": {"requests": [1]}}]}),
            json!({"selector": [], "template": 3, "ports": [{"port": "x", "targetPort": null}]})];
        let shape = &shapes[usize::from(spec) % shapes.len()];
        for kind in ["Pod", "Deployment", "Service", "ConfigMap", "Secret", "Namespace", "Node"] {
            let object = json!({"metadata": shape, "spec": shape, "data": shape});
            let _ = validate(kind, &object);
        }
    }
}
