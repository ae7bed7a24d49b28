//! The exec backend against real scripts: argv reaches the program word for word, with no
//! shell in between; failures, timeouts and missing programs are reported.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_hypervisor::{Action, ExecBackend, Hypervisor, HypervisorError, Instance};
use tether_testkit::{temp_dir, wait_for};

const UUID: &str = "8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77";

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A script that writes each of its arguments, NUL-terminated, to the file named by `$1`.
fn recorder(dir: &Path) -> PathBuf {
    script(
        dir,
        "record",
        r#"out="$1"; shift; for a in "$@"; do printf '%s\0' "$a"; done > "$out""#,
    )
}

fn recorded(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut words: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    assert_eq!(
        words.pop().as_deref(),
        Some(""),
        "every word is NUL-terminated"
    );
    words
}

fn instance(name: &str) -> Instance {
    Instance {
        uuid: UUID.to_owned(),
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn passes_every_word_verbatim_without_a_shell() {
    let dir = temp_dir();
    let rec = recorder(dir.path());
    let out = dir.path().join("argv");
    let pwned = dir.path().join("pwned");
    let template = format!(
        "{} {} {{action}} {{uuid}} {{name}} 'two words' --vm=\"{{name}}\"",
        rec.display(),
        out.display()
    );
    let backend = ExecBackend::new(&template).unwrap();
    let name = format!(
        "x'; rm -rf / ; touch {p}; echo \"$(touch {p})\" `touch {p}` {{uuid}}",
        p = pwned.display()
    );

    backend
        .apply(&instance(&name), Action::Reboot)
        .await
        .unwrap();

    assert_eq!(
        recorded(&out),
        vec![
            "reboot".to_owned(),
            UUID.to_owned(),
            name.clone(),
            "two words".to_owned(),
            format!("--vm={name}"),
        ]
    );
    assert!(!pwned.exists(), "the name was interpreted by a shell");
}

#[tokio::test]
async fn runs_for_every_action_with_its_name() {
    let dir = temp_dir();
    let rec = recorder(dir.path());
    let out = dir.path().join("argv");
    let backend = ExecBackend::new(&format!("{} {} {{action}}", rec.display(), out.display()));
    let backend = backend.unwrap();
    for action in [Action::Log, Action::Reboot, Action::Stop] {
        backend.apply(&instance(""), action).await.unwrap();
        assert_eq!(recorded(&out), vec![action.as_str().to_owned()]);
    }
    assert_eq!(backend.name(), "exec");
}

#[tokio::test]
async fn a_non_zero_exit_is_command_failed() {
    let dir = temp_dir();
    let fail = script(dir.path(), "fail", "echo 'no such VM' >&2; exit 3");
    let backend = ExecBackend::new(&format!("{} {{uuid}}", fail.display())).unwrap();
    match backend.apply(&instance("vm"), Action::Stop).await {
        Err(HypervisorError::CommandFailed { command, status }) => {
            assert!(command.contains(UUID), "{command}");
            assert!(status.contains('3'), "{status}");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_over_time_is_killed_with_its_children() {
    let dir = temp_dir();
    let pid_file = dir.path().join("pid");
    let hang = script(
        dir.path(),
        "hang",
        &format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
    );
    let backend = ExecBackend::new(&hang.display().to_string())
        .unwrap()
        .with_timeout(Duration::from_millis(300));

    let started = tokio::time::Instant::now();
    let result = backend.apply(&instance("vm"), Action::Reboot).await;

    assert!(
        matches!(result, Err(HypervisorError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    wait_for(
        "the script's child is killed",
        Duration::from_secs(5),
        || {
            // Gone, or a zombie waiting for a reaper: either way no longer running.
            std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_missing_program_is_an_io_error() {
    let backend = ExecBackend::new("/nonexistent/recover {uuid}").unwrap();
    let result = backend.apply(&instance("vm"), Action::Reboot).await;
    assert!(
        matches!(result, Err(HypervisorError::Io { .. })),
        "{result:?}"
    );
}

#[test]
fn a_bad_template_is_refused_when_built() {
    for bad in ["", "  ", "/bin/x 'unterminated", "{name} --now"] {
        let result = ExecBackend::new(bad);
        assert!(
            matches!(result, Err(HypervisorError::InvalidTemplate { .. })),
            "{bad:?}: {result:?}"
        );
    }
}
