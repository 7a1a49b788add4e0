use super::*;

fn plan(text: &str) -> Dialplan {
    match Dialplan::parse(text) {
        Ok(p) => p,
        Err(e) => panic!("test plan should parse: {e}"),
    }
}

/// Parses `text`, expecting an error on `line` whose message contains `needle`.
fn expect_err(text: &str, line: Option<usize>, needle: &str) {
    match Dialplan::parse(text) {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => {
            assert_eq!(e.line, line, "wrong line for: {e}");
            assert!(
                e.message.contains(needle),
                "{e:?} should contain {needle:?}"
            );
        }
    }
}

fn target(p: &Dialplan, dialled: &str, from: CallerClass) -> Option<Target> {
    p.route(dialled, from).map(|d| d.target)
}

fn user(ext: &str) -> Option<Target> {
    Some(Target::User {
        extension: ext.into(),
    })
}

fn trunk(name: &str, number: &str) -> Option<Target> {
    Some(Target::Trunk {
        trunk: name.into(),
        number: number.into(),
    })
}

const INT: CallerClass = CallerClass::Internal;
const TRK: CallerClass = CallerClass::Trunk;

// --- the shipped plan -----------------------------------------------------

#[test]
fn default_plan_parses_and_equals_the_file() {
    assert_eq!(Dialplan::default_plan(), plan(DEFAULT_DIALPLAN));
    let on_disk = include_str!("../../dialplans/default.toml");
    assert_eq!(DEFAULT_DIALPLAN, on_disk);
}

#[test]
fn default_plan_routes() {
    let p = Dialplan::default_plan();
    let d = p.route("100", INT).expect("100 routes");
    assert_eq!(d.route, "extensions");
    assert_eq!(
        d.target,
        Target::User {
            extension: "100".into()
        }
    );
    assert_eq!(target(&p, "*43", INT), Some(Target::Echo));
    assert_eq!(
        target(&p, "030 1234-567", INT),
        trunk("default", "+49301234567")
    );
    assert_eq!(
        target(&p, "+1 (555) 010-9999", INT),
        trunk("default", "+15550109999")
    );
    assert_eq!(
        target(&p, "0044 20 7946 0000", INT),
        trunk("default", "+442079460000")
    );
    assert_eq!(
        p.route("0044 20", INT).map(|d| d.route).as_deref(),
        Some("international")
    );
    for garbage in [
        "garbage",
        "",
        "1",
        "0",
        "1234567",
        "sip:alice@example.com",
        "*",
        "#",
    ] {
        assert_eq!(
            target(&p, garbage, INT),
            Some(Target::Reject { status: 404 }),
            "{garbage:?}"
        );
    }
    // Extension bounds: 2..=6 digits, no leading 0.
    assert_eq!(target(&p, "12", INT), user("12"));
    assert_eq!(target(&p, "123456", INT), user("123456"));
    assert_eq!(
        target(&p, "1234567", INT),
        Some(Target::Reject { status: 404 })
    );
    // Calls from a trunk reach users and the echo test but never go back out.
    assert_eq!(target(&p, "100", TRK), user("100"));
    assert_eq!(target(&p, "*43", TRK), Some(Target::Echo));
    assert_eq!(
        target(&p, "0301234567", TRK),
        Some(Target::Reject { status: 404 })
    );
    assert_eq!(
        target(&p, "+15550109999", TRK),
        Some(Target::Reject { status: 404 })
    );
    let trunks: Vec<_> = p.trunks_referenced().map(|t| t.trunk).collect();
    assert_eq!(trunks, ["default", "default", "default"]);
}

// --- matching and decisions -------------------------------------------------

const SAMPLE: &str = r#"
[numbering]
country_code = "49"
area_code = "30"

[[route]]
name = "vm"
match = "*9{box:3}"
rewrite = "9{box}"
action = "user"

[[route]]
name = "fax"
match = "8{n:2}"
action = "fax"

[[route]]
name = "conf"
match = "7{room:2}"
action = "conference"
room = "room-{room}"

[[route]]
name = "conf-plain"
match = "6{:2}"
action = "conference"

[[route]]
name = "did"
match = "+4930123456{ext:3}"
from = "trunk"
rewrite = "{ext}"
action = "user"

[[route]]
name = "out-de"
match = "0{rest}"
rewrite = "+49{rest}"
action = "trunk"
trunk = "carrier"
from = "internal"

[[route]]
name = "out-short"
match = "11[02]"
action = "trunk"
trunk = "emergency"
normalise = false
from = "internal"

[[route]]
name = "local"
match = "N{:6-7}"
action = "trunk"
trunk = "carrier"
from = "internal"

[[route]]
name = "blocked"
match = "0900{}"
action = "reject"
status = 403

[[route]]
name = "ext"
match = "{e:3-4}"
action = "user"

[[route]]
name = "trunk-rest"
from = "trunk"
action = "reject"
status = 480

[[route]]
name = "rest"
action = "reject"
"#;

#[test]
fn actions_captures_and_rewrite() {
    let p = plan(SAMPLE);
    assert_eq!(target(&p, "*9123", INT), user("9123"));
    assert_eq!(
        target(&p, "812", INT),
        Some(Target::Fax {
            number: "812".into()
        })
    );
    assert_eq!(
        target(&p, "742", INT),
        Some(Target::Conference {
            room: "room-42".into()
        })
    );
    assert_eq!(
        target(&p, "642", INT),
        Some(Target::Conference { room: "642".into() })
    );
    assert_eq!(target(&p, "030 123", INT), trunk("carrier", "+4930123"));
    // Not normalisable: passed as dialled.
    assert_eq!(target(&p, "112", INT), trunk("emergency", "112"));
    // Local number gets the area code.
    assert_eq!(target(&p, "2345678", INT), trunk("carrier", "+49302345678"));
    assert_eq!(target(&p, "1234", INT), user("1234"));
    assert_eq!(target(&p, "123", INT), user("123"));
}

#[test]
fn first_match_wins() {
    let p = plan(SAMPLE);
    // "0900..." matches both out-de (earlier) and blocked: out-de wins.
    assert_eq!(
        p.route("09001234", INT).map(|d| d.route).as_deref(),
        Some("out-de")
    );
    // From a trunk out-de does not apply, so blocked does.
    assert_eq!(
        target(&p, "09001234", TRK),
        Some(Target::Reject { status: 403 })
    );
    // 112 is caught by out-short before ext.
    assert_eq!(
        p.route("112", INT).map(|d| d.route).as_deref(),
        Some("out-short")
    );
    assert_eq!(target(&p, "112", TRK), user("112"));
    let d = p.route("nothing", INT).expect("catch-all");
    assert_eq!((d.route.as_str(), d.line), ("rest", 75));
}

#[test]
fn caller_class_conditions() {
    let p = plan(SAMPLE);
    assert_eq!(target(&p, "+49 30 123456 100", TRK), user("100"));
    // Internal callers dialling the DID do not match `did`; `+` is not
    // handled by any internal route here, so the catch-all rejects it.
    assert_eq!(
        target(&p, "+4930123456100", INT),
        Some(Target::Reject { status: 404 })
    );
    assert_eq!(
        target(&p, "nothing", TRK),
        Some(Target::Reject { status: 480 })
    );
    assert_eq!(
        target(&p, "nothing", INT),
        Some(Target::Reject { status: 404 })
    );
}

#[test]
fn no_route_is_none() {
    let p = plan("[[route]]\nname = \"a\"\nmatch = \"1\"\naction = \"echo\"\n");
    assert_eq!(target(&p, "1", INT), Some(Target::Echo));
    assert_eq!(target(&p, "2", INT), None);
    assert_eq!(target(&p, &"1".repeat(100_000), INT), None);
}

#[test]
fn plan_without_numbering_passes_trunk_numbers_through() {
    let p = plan("[[route]]\nname = \"o\"\nmatch = \"0{n}\"\naction = \"trunk\"\ntrunk = \"t\"\n");
    assert_eq!(p.numbering(), None);
    assert_eq!(target(&p, "030 1", INT), trunk("t", "0301"));
}

#[test]
fn us_like_plan() {
    let text = r#"
[numbering]
country_code = "1"
international_prefix = "011"
national_prefix = "1"

[[route]]
name = "ten-digit"
match = "N{:9}"
rewrite = "+1{0}"
action = "trunk"
trunk = "sip"

[[route]]
name = "national"
match = "1{:10}"
action = "trunk"
trunk = "sip"

[[route]]
name = "international"
match = "011{}"
action = "trunk"
trunk = "sip"
"#;
    let p = plan(text);
    assert_eq!(
        target(&p, "(555) 010-9999", INT),
        trunk("sip", "+15550109999")
    );
    assert_eq!(
        target(&p, "1 555 010 9999", INT),
        trunk("sip", "+15550109999")
    );
    assert_eq!(
        target(&p, "011 44 20 7946 0000", INT),
        trunk("sip", "+442079460000")
    );
}

#[test]
fn trunk_references_and_check() {
    let p = plan(SAMPLE);
    let refs: Vec<_> = p.trunks_referenced().collect();
    assert_eq!(
        refs,
        [
            TrunkRef {
                trunk: "carrier",
                route: "out-de",
                line: 40
            },
            TrunkRef {
                trunk: "emergency",
                route: "out-short",
                line: 47
            },
            TrunkRef {
                trunk: "carrier",
                route: "local",
                line: 55
            },
        ]
    );
    assert_eq!(
        p.check_trunks(|t| t == "carrier" || t == "emergency"),
        Ok(())
    );
    let e = p
        .check_trunks(|t| t == "carrier")
        .expect_err("emergency missing");
    assert_eq!(
        e.to_string(),
        "line 47: route 'out-short' uses unknown trunk 'emergency'"
    );
}

// --- validation: every error with its line ----------------------------------

#[test]
fn toml_syntax_and_shape_errors() {
    expect_err(
        "[[route]]\nname = \"a\"\naction = \"echo\"\nmatch = \"1\n",
        Some(4),
        "",
    );
    expect_err(
        "[[route]]\nname = \"a\"\naction = \"echo\"\nmatchh = \"1\"\n",
        Some(4),
        "unknown field `matchh`",
    );
    expect_err(
        "[[route]]\nname = \"a\"\naction = \"echo\"\n\n[[route]]\naction = \"echo\"\n",
        Some(5),
        "missing field `name`",
    );
    expect_err(
        "[[route]]\nname = \"a\"\naction = \"reject\"\nstatus = \"404\"\n",
        Some(4),
        "invalid type",
    );
    expect_err("[numbering]\ncountry_code = 49\n", Some(2), "invalid type");
    expect_err("bogus = 1\n", Some(1), "unknown field `bogus`");
}

#[test]
fn empty_plan() {
    expect_err("", None, "no routes");
    expect_err(
        "# nothing\n[numbering]\ncountry_code = \"49\"\n",
        None,
        "no routes",
    );
    let e = Dialplan::parse("").expect_err("empty");
    assert_eq!(
        e.to_string(),
        "dialplan has no routes (add [[route]] tables)"
    );
}

#[test]
fn semantic_errors_name_the_line() {
    let head = "[[route]]\nname = \"ok\"\nmatch = \"1\"\naction = \"echo\"\n\n";
    let cases: &[(&str, usize, &str)] = &[
        // Line numbers count from the start of `head` (5 lines).
        (
            "[[route]]\nname = \"out\"\naction = \"trunkk\"\n",
            8,
            "route 'out': unknown action 'trunkk'",
        ),
        (
            "[[route]]\nname = \"out\"\nmatch = \"0{n}\"\naction = \"trunk\"\n",
            9,
            "route 'out': action \"trunk\" needs `trunk = \"name\"`",
        ),
        (
            "[[route]]\nname = \"out\"\naction = \"trunk\"\ntrunk = \"\"\n",
            9,
            "trunk name is empty",
        ),
        (
            "[[route]]\nname = \"p\"\nmatch = \"0{n\"\naction = \"user\"\n",
            8,
            "route 'p': bad `match`: unclosed '{'",
        ),
        (
            "[[route]]\nname = \"p\"\nmatch = \"_X.\"\naction = \"user\"\n",
            8,
            "bad `match`",
        ),
        (
            "[[route]]\nname = \"p\"\nmatch = \"[5-1]\"\naction = \"user\"\n",
            8,
            "backwards",
        ),
        (
            "[[route]]\nname = \"p\"\nmatch = \"{e:7-3}\"\naction = \"user\"\n",
            8,
            "minimum is larger",
        ),
        (
            "[[route]]\nname = \"r\"\nmatch = \"0{rest}\"\nrewrite = \"+49{nat}\"\naction = \"user\"\n",
            9,
            "route 'r': bad `rewrite`: '{nat}' refers to an unknown capture 'nat'",
        ),
        (
            "[[route]]\nname = \"r\"\nmatch = \"0{rest}\"\nrewrite = \"{2}\"\naction = \"user\"\n",
            9,
            "refers to capture 2, but the pattern has 1",
        ),
        (
            "[[route]]\nname = \"r\"\nrewrite = \"{rest}\"\naction = \"user\"\n",
            8,
            "unknown capture 'rest'",
        ),
        (
            "[[route]]\nname = \"ok\"\nmatch = \"2\"\naction = \"echo\"\n",
            7,
            "route 'ok': duplicate route name (first used on line 1)",
        ),
        (
            "[[route]]\nname = \"rj\"\naction = \"reject\"\nstatus = 200\n",
            9,
            "route 'rj': status 200 is not a SIP error status",
        ),
        (
            "[[route]]\nname = \"rj\"\naction = \"reject\"\nstatus = 700\n",
            9,
            "status 700",
        ),
        (
            "[[route]]\nname = \"rj\"\naction = \"reject\"\nstatus = -1\n",
            9,
            "status -1",
        ),
        (
            "[[route]]\nname = \"rj\"\naction = \"reject\"\nstatus = 99999999999\n",
            9,
            "status 99999999999",
        ),
        (
            "[[route]]\nname = \"u\"\naction = \"user\"\ntrunk = \"x\"\n",
            9,
            "`trunk` only applies to action = \"trunk\"",
        ),
        (
            "[[route]]\nname = \"u\"\naction = \"user\"\nstatus = 404\n",
            9,
            "`status` only applies",
        ),
        (
            "[[route]]\nname = \"u\"\naction = \"echo\"\nroom = \"a\"\n",
            9,
            "`room` only applies",
        ),
        (
            "[[route]]\nname = \"e\"\nmatch = \"1{x}\"\nrewrite = \"{x}\"\naction = \"echo\"\n",
            9,
            "`rewrite` has no effect",
        ),
        (
            "[[route]]\nname = \"c\"\nmatch = \"7{r}\"\naction = \"conference\"\nroom = \"r {r}\"\n",
            10,
            "bad `room`",
        ),
        (
            "[[route]]\nname = \"f\"\nfrom = \"outside\"\naction = \"echo\"\n",
            8,
            "unknown caller class 'outside'",
        ),
        (
            "[[route]]\nname = \"  \"\naction = \"echo\"\n",
            7,
            "route name is empty",
        ),
        (
            "[[route]]\nname = \"all\"\naction = \"echo\"\n\n[[route]]\nname = \"late\"\nmatch = \"5\"\naction = \"echo\"\n",
            10,
            "route 'late' can never match: route 'all' above",
        ),
    ];
    for (tail, line, needle) in cases {
        expect_err(&format!("{head}{tail}"), Some(*line), needle);
    }
}

#[test]
fn unreachable_only_when_every_class_is_caught() {
    // A trunk-only catch-all leaves internal callers to later routes.
    plan("[[route]]\nname = \"t\"\nfrom = \"trunk\"\naction = \"echo\"\n\n[[route]]\nname = \"i\"\nmatch = \"1\"\naction = \"echo\"\n");
    expect_err(
        "[[route]]\nname = \"t\"\nfrom = \"trunk\"\naction = \"echo\"\n\n[[route]]\nname = \"i\"\nfrom = \"trunk\"\nmatch = \"1\"\naction = \"echo\"\n",
        Some(6),
        "can never match",
    );
    expect_err(
        "[[route]]\nname = \"t\"\nfrom = \"trunk\"\naction = \"echo\"\n[[route]]\nname = \"i\"\nfrom = \"internal\"\naction = \"echo\"\n[[route]]\nname = \"x\"\naction = \"echo\"\n",
        Some(9),
        "route 'x' can never match: route 'i' above",
    );
}

#[test]
fn numbering_errors() {
    let route = "\n[[route]]\nname = \"a\"\naction = \"echo\"\n";
    let cases: &[(&str, usize, &str)] = &[
        (
            "[numbering]\ncountry_code = \"0\"\n",
            2,
            "cannot start with 0",
        ),
        (
            "[numbering]\ncountry_code = \"4a\"\n",
            2,
            "country_code '4a'",
        ),
        (
            "[numbering]\ncountry_code = \"1234\"\n",
            2,
            "country_code '1234'",
        ),
        (
            "[numbering]\ncountry_code = \"49\"\n\ninternational_prefix = \"\"\n",
            4,
            "international_prefix ''",
        ),
        (
            "[numbering]\ncountry_code = \"49\"\nnational_prefix = \"o\"\n",
            3,
            "national_prefix 'o'",
        ),
        (
            "[numbering]\ncountry_code = \"49\"\nnational_prefix = \"00\"\n",
            3,
            "are the same",
        ),
        (
            "[numbering]\ncountry_code = \"49\"\narea_code = \"\"\n",
            3,
            "area_code ''",
        ),
        (
            "[numbering]\nnational_prefix = \"0\"\n",
            1,
            "missing field `country_code`",
        ),
    ];
    for (numbering, line, needle) in cases {
        expect_err(&format!("{numbering}{route}"), Some(*line), needle);
    }
    let p = plan(&format!(
        "[numbering]\ncountry_code = \"34\"\nnational_prefix = \"\"\n{route}"
    ));
    assert_eq!(
        p.numbering(),
        Some(&Numbering {
            country_code: "34".into(),
            international_prefix: "00".into(),
            national_prefix: String::new(),
            area_code: None,
        })
    );
}

#[test]
fn error_display_format() {
    let e = Dialplan::parse(
        "[[route]]\nname = \"ok\"\naction = \"echo\"\nmatch=\"1\"\n\n[[route]]\nname = \"out\"\naction = \"trunkk\"\n",
    )
    .expect_err("bad action");
    assert_eq!(
        e.to_string(),
        "line 8: route 'out': unknown action 'trunkk' (expected user, trunk, fax, conference, echo or reject)"
    );
}

#[test]
fn never_panics_on_odd_text() {
    let inputs = [
        "\u{0}",
        "[[route]]\nname = \"ä\"\nmatch = \"{ä}\"\naction = \"user\"\n",
        "[[route]]\nname = \"a\"\nmatch = \"1\"\nrewrite = \"{ä\"\naction = \"user\"\n",
        "[[route]]\nname = \"a\"\nmatch = \"[ä]\"\naction = \"user\"\n",
        "[[route]]\nname = \"a\"\nmatch = \"{x:18446744073709551616}\"\naction = \"user\"\n",
        "[[route]]\nname = \"a\"\nmatch = \"{x:-}\"\naction = \"user\"\n",
        "[[route]]\r\nname = \"a\"\r\nmatch = \"[\"\r\naction = \"user\"\r\n",
        "route = 5",
        "route = [1]",
        "[numbering]\n[numbering]\n",
    ];
    for text in inputs {
        if let Err(e) = Dialplan::parse(text) {
            assert!(e.line.is_some(), "{text:?}: {e}");
        }
    }
    let p = Dialplan::default_plan();
    for dialled in [
        "\u{0}", "ä", "+", "++", "0", "00", "000", "+ä1", "((((", "1\u{301}",
    ] {
        assert!(p.route(dialled, INT).is_some());
        assert!(p.route(dialled, TRK).is_some());
    }
}

#[test]
fn mutated_default_plan_never_panics() {
    // A tiny deterministic generator (no dev-dependencies allowed): deletes,
    // duplicates and replaces characters of the shipped plan, then parses
    // and routes. Only "no panic, and an error has a line" is checked.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap_or(0) % n.max(1)
    };
    let alphabet: Vec<char> = "{}[]:-_+*#0123456789XZN \"=\n.ä".chars().collect();
    let base: Vec<char> = DEFAULT_DIALPLAN.chars().collect();
    for _ in 0..1500 {
        let mut text = base.clone();
        for _ in 0..=next(4) {
            let at = next(text.len());
            match next(3) {
                0 => {
                    text.remove(at);
                }
                1 => text.insert(at, alphabet[next(alphabet.len())]),
                _ => text[at] = alphabet[next(alphabet.len())],
            }
        }
        let text: String = text.into_iter().collect();
        match Dialplan::parse(&text) {
            Ok(p) => {
                for dialled in ["100", "*43", "0301234567", "+15550109999", "", "x{"] {
                    let _ = p.route(dialled, INT);
                    let _ = p.route(dialled, TRK);
                }
            }
            Err(e) => assert!(e.line.is_some() || e.message.contains("no routes"), "{e}"),
        }
    }
}

// --- reload ------------------------------------------------------------------

#[test]
fn reload_keeps_old_snapshots_working() {
    let handle = DialplanHandle::new(Dialplan::default_plan());
    let during_call = handle.current();
    let new_plan = plan("[[route]]\nname = \"only-echo\"\naction = \"echo\"\n");
    let old = handle.replace(new_plan);
    assert!(Arc::ptr_eq(&old, &during_call));
    // The call that started before the reload still routes with the old plan.
    assert_eq!(target(&during_call, "100", INT), user("100"));
    // New calls see the new plan.
    assert_eq!(target(&handle.current(), "100", INT), Some(Target::Echo));
}

#[test]
fn handle_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DialplanHandle>();
    assert_send_sync::<Dialplan>();
    let handle = Arc::new(DialplanHandle::new(Dialplan::default_plan()));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&handle);
            std::thread::spawn(move || {
                (0..200)
                    .filter(|_| h.current().route("100", INT).is_some())
                    .count()
            })
        })
        .collect();
    for i in 0..20 {
        let text = format!("[[route]]\nname = \"r{i}\"\nmatch = \"100\"\naction = \"echo\"\n");
        handle.replace(plan(&text));
    }
    for r in readers {
        assert_eq!(r.join().ok(), Some(200));
    }
}
