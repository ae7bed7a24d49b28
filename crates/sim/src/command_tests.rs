//! Tests of the command parser, including a property test: no input makes it panic, and every
//! command survives printing and parsing again.

use super::*;
use proptest::prelude::*;

fn ok(line: &str) -> Command {
    parse(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn parses_every_command() {
    assert_eq!(ok("hang vm-3"), Command::Hang("vm-3".into()));
    assert_eq!(
        ok("  unhealthy   vm-2   disk  full \n"),
        Command::Unhealthy {
            vm: "vm-2".into(),
            reason: "disk  full".into()
        }
    );
    assert_eq!(ok("crash vm-1"), Command::Crash("vm-1".into()));
    assert_eq!(
        ok("slow vm-4 500"),
        Command::Slow {
            vm: "vm-4".into(),
            delay: Duration::from_millis(500)
        }
    );
    assert_eq!(
        ok("slow vm-4 20ms"),
        Command::Slow {
            vm: "vm-4".into(),
            delay: Duration::from_millis(20)
        }
    );
    assert_eq!(ok("heal vm-3"), Command::Heal("vm-3".into()));
    assert_eq!(ok("RESET vm-2"), Command::Reset("vm-2".into()));
    assert_eq!(ok("quit vm-2"), Command::Quit("vm-2".into()));
    assert_eq!(ok("start vm-2"), Command::Start("vm-2".into()));
    assert_eq!(ok("list"), Command::List);
    assert_eq!(ok("list").vm(), None);
    assert_eq!(
        ok("hang 8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77").vm(),
        Some("8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77")
    );
}

#[test]
fn bad_input_names_what_was_expected() {
    assert_eq!(parse(""), Err(CommandError::Empty));
    assert_eq!(parse(" \t "), Err(CommandError::Empty));
    assert_eq!(
        parse("frobnicate vm-1"),
        Err(CommandError::Unknown("frobnicate".into()))
    );
    assert_eq!(parse("hang"), Err(CommandError::MissingVm("hang")));
    assert_eq!(parse("slow"), Err(CommandError::MissingVm("slow")));
    assert_eq!(parse("unhealthy vm-2"), Err(CommandError::MissingReason));
    assert_eq!(
        parse("slow vm-4"),
        Err(CommandError::BadDelay(String::new()))
    );
    assert_eq!(
        parse("slow vm-4 fast"),
        Err(CommandError::BadDelay("fast".into()))
    );
    assert_eq!(
        parse("slow vm-4 -5"),
        Err(CommandError::BadDelay("-5".into()))
    );
    assert_eq!(
        parse("slow vm-4 +5"),
        Err(CommandError::BadDelay("+5".into()))
    );
    assert_eq!(
        parse("slow vm-4 99999999999"),
        Err(CommandError::BadDelay("99999999999".into()))
    );
    assert_eq!(
        parse("hang vm-1 vm-2"),
        Err(CommandError::Extra {
            command: "hang",
            extra: "vm-2".into()
        })
    );
    assert_eq!(
        parse("list all"),
        Err(CommandError::Extra {
            command: "list",
            extra: "all".into()
        })
    );
    let message = parse("frobnicate").map_err(|e| e.to_string());
    assert!(message.is_err_and(|m| m.contains("hang <vm>") && m.contains("list")));
    let message = parse("slow vm-1 x").map_err(|e| e.to_string());
    assert!(message.is_err_and(|m| m.contains("milliseconds")));
}

fn arb_command() -> impl Strategy<Value = Command> {
    let vm = "[a-z0-9-]{1,20}";
    prop_oneof![
        vm.prop_map(Command::Hang),
        (vm, "[a-z][a-z !]{0,30}[a-z]").prop_map(|(vm, reason)| Command::Unhealthy { vm, reason }),
        vm.prop_map(Command::Crash),
        (vm, 0..=MAX_SLOW_MS).prop_map(|(vm, ms)| Command::Slow {
            vm,
            delay: Duration::from_millis(ms)
        }),
        vm.prop_map(Command::Heal),
        vm.prop_map(Command::Reset),
        vm.prop_map(Command::Quit),
        vm.prop_map(Command::Start),
        Just(Command::List),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(line in any::<String>()) {
        let _ = parse(&line);
    }

    #[test]
    fn arbitrary_words_never_panic(words in proptest::collection::vec("(hang|slow|unhealthy|list|[^ ]{0,8}| |\t|\u{a0})", 0..6)) {
        let _ = parse(&words.concat());
    }

    #[test]
    fn printed_commands_parse_back(command in arb_command()) {
        prop_assert_eq!(parse(&command.to_string()), Ok(command));
    }
}
