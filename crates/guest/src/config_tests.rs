use super::*;
use proptest::prelude::*;

fn invalid_message(text: &str) -> String {
    match GuestConfig::parse(text) {
        Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
        other => panic!("{text:?} should be invalid, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_reference_code_defaults() {
    let c = GuestConfig::default();
    assert_eq!(c.heartbeat_interval_ms, 1000);
    assert_eq!(c.init_retry_ms, 5000);
    assert_eq!(c.min_timeout_ms, 5000);
    assert_eq!(c.corrective_action, CorrectiveAction::Reboot);
    assert_eq!(
        (
            c.vote_secs,
            c.shutdown_notice_secs,
            c.suspend_notice_secs,
            c.resume_notice_secs
        ),
        (10, 10, 10, 10)
    );
    assert_eq!(c.restart_secs, 120);
    assert_eq!(c.health_check_interval_secs, 0);
    assert_eq!(c.health_check_script, None);
    assert_eq!(c.event_notification_script, None);
    assert_eq!(GuestConfig::parse("").ok(), Some(c));
}

#[test]
fn every_key_is_read() {
    let text = "\
HB_INTERVAL=400
HB_INIT_RETRY=2000
HB_MIN_TIMEOUT=3000
CORRECTIVE_ACTION=stop
VOTE=8
SHUTDOWN_NOTICE=7
SUSPEND_NOTICE=6
RESUME_NOTICE=13
RESTART=600
HEALTH_CHECK_INTERVAL=30
HEALTH_CHECK_SCRIPT=/etc/tether/health
EVENT_NOTIFICATION_SCRIPT=/etc/tether/event
";
    let (c, warnings) = GuestConfig::parse_with_warnings(text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let expected = GuestConfig {
        heartbeat_interval_ms: 400,
        init_retry_ms: 2000,
        min_timeout_ms: 3000,
        corrective_action: CorrectiveAction::Stop,
        vote_secs: 8,
        shutdown_notice_secs: 7,
        suspend_notice_secs: 6,
        resume_notice_secs: 13,
        restart_secs: 600,
        health_check_interval_secs: 30,
        health_check_script: Some("/etc/tether/health".into()),
        event_notification_script: Some("/etc/tether/event".into()),
    };
    assert_eq!(c, expected);
    assert_eq!(KEYS.len(), 12);
}

#[test]
fn quotes_comments_and_whitespace_are_stripped() {
    let text = "
# a comment line
   # an indented comment
  HB_INTERVAL = \"2000\"
CORRECTIVE_ACTION='log'
VOTE=3   # inline comment
RESTART=\t5\t
HEALTH_CHECK_SCRIPT=\"/opt/my health#1\"  # quoted value keeps spaces and #
EVENT_NOTIFICATION_SCRIPT=/opt/ev#ent
RESUME_NOTICE=4\r
";
    let c = GuestConfig::parse(text).unwrap();
    assert_eq!(c.heartbeat_interval_ms, 2000);
    assert_eq!(c.corrective_action, CorrectiveAction::Log);
    assert_eq!(c.vote_secs, 3);
    assert_eq!(c.restart_secs, 5);
    assert_eq!(c.health_check_script, Some("/opt/my health#1".into()));
    assert_eq!(c.event_notification_script, Some("/opt/ev#ent".into()));
    assert_eq!(c.resume_notice_secs, 4);
}

#[test]
fn empty_script_means_none_and_later_lines_win() {
    let text = "HEALTH_CHECK_SCRIPT=/a\nHEALTH_CHECK_SCRIPT=\"\"\nVOTE=1\nVOTE=2\n";
    let c = GuestConfig::parse(text).unwrap();
    assert_eq!(c.health_check_script, None);
    assert_eq!(c.vote_secs, 2);
}

#[test]
fn unknown_keys_and_bare_lines_are_warnings() {
    let text = "FOO=1\nHB_INTERVAL=500\njust words\nhb_interval=900\n";
    let (c, warnings) = GuestConfig::parse_with_warnings(text).unwrap();
    assert_eq!(c.heartbeat_interval_ms, 500);
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "line 1: unknown key \"FOO\"",
            "line 3: not a KEY=value line",
            "line 4: unknown key \"hb_interval\"",
        ]
    );
}

#[test]
fn invalid_values_name_key_value_and_rule() {
    let cases = [
        (
            "HB_INTERVAL=300",
            "HB_INTERVAL=300 is invalid: must be an integer of at least 400 (ms)",
        ),
        (
            "HB_INTERVAL=fast",
            "HB_INTERVAL=fast is invalid: must be an integer of at least 400 (ms)",
        ),
        (
            "HB_INTERVAL=2147483648",
            "HB_INTERVAL=2147483648 is invalid: must be an integer of at most 2147483647 (ms)",
        ),
        (
            "HB_INIT_RETRY=50",
            "HB_INIT_RETRY=50 is invalid: must be an integer of at least 100 (ms)",
        ),
        (
            "HB_MIN_TIMEOUT=-1",
            "HB_MIN_TIMEOUT=-1 is invalid: must be an integer of at least 0 (ms)",
        ),
        (
            "CORRECTIVE_ACTION=none",
            "CORRECTIVE_ACTION=none is invalid: must be one of reboot, stop, log",
        ),
        (
            "CORRECTIVE_ACTION=Reboot",
            "CORRECTIVE_ACTION=Reboot is invalid: must be one of reboot, stop, log",
        ),
        (
            "VOTE=",
            "VOTE= is invalid: must be an integer of at least 0 (s)",
        ),
        (
            "SHUTDOWN_NOTICE=1.5",
            "SHUTDOWN_NOTICE=1.5 is invalid: must be an integer of at least 0 (s)",
        ),
        (
            "SUSPEND_NOTICE=2147483",
            "SUSPEND_NOTICE=2147483 is invalid: must be an integer of at most 2147482 (s)",
        ),
        (
            "RESUME_NOTICE=ten",
            "RESUME_NOTICE=ten is invalid: must be an integer of at least 0 (s)",
        ),
        (
            "RESTART=-5",
            "RESTART=-5 is invalid: must be an integer of at least 0 (s)",
        ),
        (
            "HEALTH_CHECK_INTERVAL=soon",
            "HEALTH_CHECK_INTERVAL=soon is invalid: must be an integer of at least 0 (s)",
        ),
        (
            "HEALTH_CHECK_SCRIPT=health.sh",
            "HEALTH_CHECK_SCRIPT=health.sh is invalid: must be an absolute path",
        ),
        (
            "EVENT_NOTIFICATION_SCRIPT=./event",
            "EVENT_NOTIFICATION_SCRIPT=./event is invalid: must be an absolute path",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(invalid_message(text), message, "for {text:?}");
    }
}

#[test]
fn long_invalid_values_are_cut_to_one_short_line() {
    let text = format!("VOTE={}", "9".repeat(500));
    let message = invalid_message(&text);
    assert!(message.len() < 140, "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn load_tells_a_missing_file_from_an_unreadable_one() {
    let dir = tether_testkit::temp_dir();
    let missing = dir.path().join("nope.conf");
    assert!(matches!(GuestConfig::load(&missing), Err(ConfigError::Missing(p)) if p == missing));
    assert!(matches!(
        GuestConfig::load(dir.path()),
        Err(ConfigError::Read { .. })
    ));
    let file = dir.path().join("guest_heartbeat.conf");
    std::fs::write(&file, "HB_INTERVAL=700\n").unwrap();
    assert_eq!(GuestConfig::load(&file).unwrap().heartbeat_interval_ms, 700);
}

#[test]
fn challenge_timeout_is_the_larger_of_two_intervals_and_the_floor() {
    let mut c = GuestConfig::default();
    assert_eq!(c.challenge_timeout_ms(), 5000);
    c.heartbeat_interval_ms = 4000;
    assert_eq!(c.challenge_timeout_ms(), 8000);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = GuestConfig::parse_with_warnings(&text);
    }

    #[test]
    fn arbitrary_lines_of_known_keys_never_panic(
        lines in proptest::collection::vec(
            (proptest::sample::select(KEYS), "[ \t\"'#=a-z0-9/.-]{0,20}"), 0..20)
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Err(e) = GuestConfig::parse_with_warnings(&text) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }
}

#[test]
fn the_sample_file_documents_every_key_with_its_default() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/guest/guest_heartbeat.conf"
    );
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(GuestConfig::parse(&text).unwrap(), GuestConfig::default());
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_uppercase()) => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let (config, warnings) = GuestConfig::parse_with_warnings(&uncommented).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    for key in KEYS {
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key}="))),
            "{key} missing"
        );
    }
    let expected = GuestConfig {
        health_check_script: Some("/etc/tether/health_check".into()),
        event_notification_script: Some("/etc/tether/event_handler".into()),
        ..GuestConfig::default()
    };
    assert_eq!(config, expected);
}
