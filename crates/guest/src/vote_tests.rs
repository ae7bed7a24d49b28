//! The merge of voters' answers.

use super::*;

fn app(conn: ConnId, name: &str) -> AppVoter {
    AppVoter {
        conn,
        name: name.into(),
    }
}

/// A tally waiting for the script (if `script`) and applications 1 `db` and 2 `web`.
fn tally(script: bool) -> Tally {
    let mut t = Tally::new(script);
    t.list_apps(vec![app(1, "db"), app(2, "web")]);
    t
}

fn accept(note: &str) -> Answer {
    Answer::Accept(note.into())
}

fn outcome(code: Option<i32>, output: &str) -> ScriptOutcome {
    ScriptOutcome {
        code,
        output: output.into(),
        failed_to_start: false,
    }
}

const REVOCABLE: NotificationType = NotificationType::Revocable;
const IRREVOCABLE: NotificationType = NotificationType::Irrevocable;

#[test]
fn everyone_accepting_is_accept_for_a_vote_and_complete_for_a_notification() {
    for (notification, want) in [
        (REVOCABLE, VoteResult::Accept),
        (IRREVOCABLE, VoteResult::Complete),
        (NotificationType::Unknown, VoteResult::Complete),
    ] {
        let mut t = tally(true);
        assert_eq!(
            t.count(Voter::App(1), accept("")),
            Some("application db".into())
        );
        assert!(!t.is_done());
        t.count(Voter::Script, accept("fine"));
        t.count(Voter::App(2), Answer::of_app(3, String::new()));
        assert!(t.is_done());
        assert_eq!(t.result(notification), (want, "fine".into()));
    }
}

#[test]
fn the_first_reject_wins_with_its_reason() {
    let mut t = tally(true);
    t.count(Voter::Script, accept("fine"));
    t.count(Voter::App(2), Answer::of_app(2, "web is busy".into()));
    t.count(Voter::App(1), Answer::Reject("db too".into()));
    assert_eq!(
        t.result(REVOCABLE),
        (VoteResult::Reject, "web is busy".into())
    );
    let mut t = tally(false);
    t.count(Voter::App(1), Answer::Reject(String::new()));
    assert_eq!(
        t.result(IRREVOCABLE),
        (VoteResult::Reject, "Rejected by application db.".into())
    );
}

#[test]
fn silent_voters_count_as_accept_and_are_named() {
    let mut t = tally(true);
    t.count(Voter::Script, Answer::of_script(&outcome(Some(2), "oops")));
    t.count(Voter::App(1), Answer::Silent("no answer within 8 s".into()));
    t.count(Voter::App(2), Answer::of_app(0, String::new()));
    assert!(t.is_done());
    let want = "No answer from event script, application db, application web.";
    assert_eq!(t.result(REVOCABLE), (VoteResult::Accept, want.into()));
}

#[test]
fn closing_counts_the_rest_as_silent_but_keeps_a_reject() {
    let mut t = tally(true);
    t.count(Voter::App(1), accept(""));
    let mut closed = t.clone().close();
    closed.sort();
    assert_eq!(closed, vec!["application web", "event script"]);
    let mut open = t.clone();
    open.close();
    assert!(open.is_done());
    assert_eq!(
        open.result(IRREVOCABLE),
        (
            VoteResult::Complete,
            "No answer from event script, application web.".into()
        )
    );
    t.count(
        Voter::Script,
        Answer::of_script(&outcome(Some(1), "no\nmore")),
    );
    t.close();
    assert_eq!(t.result(REVOCABLE), (VoteResult::Reject, "no".into()));
}

#[test]
fn nobody_to_ask_is_complete_at_once() {
    let mut t = Tally::new(false);
    assert!(!t.is_done(), "the applications are not listed yet");
    assert!(t.waits_for_apps());
    t.list_apps(Vec::new());
    assert!(t.is_done());
    assert_eq!(t.result(REVOCABLE), (VoteResult::Complete, String::new()));
}

#[test]
fn unknown_voters_and_second_answers_are_not_counted() {
    let mut t = tally(false);
    assert_eq!(t.count(Voter::Script, Answer::Reject("x".into())), None);
    assert_eq!(t.count(Voter::App(9), Answer::Reject("x".into())), None);
    assert!(t.count(Voter::App(1), accept("")).is_some());
    assert_eq!(t.count(Voter::App(1), Answer::Reject("x".into())), None);
    t.list_apps(vec![app(3, "late")]);
    assert!(t.count(Voter::App(2), accept("")).is_some());
    assert!(t.is_done(), "only the first list counts");
    assert_eq!(t.result(REVOCABLE).0, VoteResult::Accept);
}

#[test]
fn the_reason_is_cut_to_the_protocol_limit_on_a_character_boundary() {
    let mut t = tally(false);
    t.count(Voter::App(1), Answer::Reject("é".repeat(200)));
    let (_, log) = t.result(REVOCABLE);
    assert_eq!(log.len(), 222);
    assert!(log.len() <= MAX_LOG_LEN);
}

#[test]
fn script_outcomes_map_to_answers() {
    assert_eq!(Answer::of_script(&outcome(Some(0), " ok \n")), accept("ok"));
    let killed = Answer::of_script(&outcome(None, ""));
    assert_eq!(killed, Answer::Silent("killed by a signal".into()));
    let missing = ScriptOutcome {
        failed_to_start: true,
        ..outcome(None, "Cannot run /x")
    };
    assert_eq!(
        Answer::of_script(&missing),
        Answer::Silent("Cannot run /x".into())
    );
}
