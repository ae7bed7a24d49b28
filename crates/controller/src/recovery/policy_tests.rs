use super::*;
use crate::store::CorrectiveAction;

fn failure() -> PendingFailure {
    PendingFailure {
        event_id: 7,
        host: "compute-0".into(),
        instance: "u1".into(),
        action: "reboot".into(),
        cause: "heartbeat_lost".into(),
    }
}

fn instance(state: &str) -> InstanceRecord {
    InstanceRecord {
        uuid: "u1".into(),
        host: "compute-0".into(),
        name: "vm1".into(),
        state: state.into(),
        interval_ms: Some(1000),
        health: Some("healthy".into()),
        corrective_action: Some("reboot".into()),
        reason: String::new(),
        reporting_enabled: true,
        corrective_override: None,
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        recovery_mode: None,
        guest_timeouts: None,
    }
}

fn host() -> HostRecord {
    HostRecord {
        name: "compute-0".into(),
        api_url: Some("http://127.0.0.1:1".into()),
        reporting_enabled: true,
        registered_at: "2026-01-01T00:00:00.000Z".into(),
        last_seen: "2026-01-01T00:00:00.000Z".into(),
        acked_seq: 7,
        recovery_mode: RecoveryMode::Builtin,
    }
}

fn kind(verdict: &Verdict) -> Option<DecisionKind> {
    match verdict {
        Verdict::Record(kind, _) => Some(*kind),
        _ => None,
    }
}

const NOW: i64 = 10_000_000;

#[test]
fn a_lost_guest_is_ordered_when_nothing_stands_in_the_way() {
    let p = RecoveryPolicy::default();
    for state in ["lost", "unhealthy", "connecting"] {
        let v = judge(
            &p,
            &failure(),
            Some(&instance(state)),
            Some(&host()),
            &[],
            NOW,
        );
        assert_eq!(v, Verdict::Order, "{state}");
    }
}

#[test]
fn gone_recovered_reporting_off_vim_and_log_are_only_recorded() {
    let p = RecoveryPolicy::default();
    let f = failure();
    let judge_with =
        |i: Option<&InstanceRecord>, h: &HostRecord| judge(&p, &f, i, Some(h), &[], NOW);
    assert_eq!(kind(&judge_with(None, &host())), Some(DecisionKind::Gone));
    assert_eq!(
        kind(&judge_with(Some(&instance("gone")), &host())),
        Some(DecisionKind::Gone)
    );
    for state in ["heartbeating", "recovering", "unrecoverable", "exited"] {
        let v = judge_with(Some(&instance(state)), &host());
        assert_eq!(kind(&v), Some(DecisionKind::Recovered), "{state}");
    }
    let mut off = instance("lost");
    off.reporting_enabled = false;
    assert_eq!(
        kind(&judge_with(Some(&off), &host())),
        Some(DecisionKind::ReportingOff)
    );
    let mut host_off = host();
    host_off.reporting_enabled = false;
    let v = judge_with(Some(&instance("lost")), &host_off);
    assert_eq!(kind(&v), Some(DecisionKind::ReportingOff));

    let mut vim_host = host();
    vim_host.recovery_mode = RecoveryMode::Vim;
    let v = judge_with(Some(&instance("lost")), &vim_host);
    assert_eq!(kind(&v), Some(DecisionKind::LeftToVim));
    let mut builtin_here = instance("lost");
    builtin_here.recovery_mode = Some(RecoveryMode::Builtin);
    assert_eq!(
        judge_with(Some(&builtin_here), &vim_host),
        Verdict::Order,
        "the instance wins"
    );
    let mut vim_here = instance("lost");
    vim_here.recovery_mode = Some(RecoveryMode::Vim);
    assert_eq!(
        kind(&judge_with(Some(&vim_here), &host())),
        Some(DecisionKind::LeftToVim)
    );

    let mut logged = instance("lost");
    logged.corrective_override = Some(CorrectiveAction::Log);
    assert_eq!(
        kind(&judge_with(Some(&logged), &host())),
        Some(DecisionKind::Logged)
    );
}

#[test]
fn the_override_replaces_the_guest_s_action() {
    let mut i = instance("lost");
    assert_eq!(action_for(&failure(), Some(&i)), "reboot");
    i.corrective_override = Some(CorrectiveAction::Stop);
    assert_eq!(action_for(&failure(), Some(&i)), "stop");
}

#[test]
fn orders_back_off_doubling_then_give_up() {
    let p = RecoveryPolicy {
        max: 3,
        window: Duration::from_secs(3600),
        backoff: Duration::from_secs(30),
        backoff_max: Duration::from_secs(45),
    };
    let (f, i, h) = (failure(), instance("lost"), host());
    let at = |ordered: &[i64], now| judge(&p, &f, Some(&i), Some(&h), ordered, now);
    let t0 = NOW;
    assert_eq!(at(&[t0], t0 + 29_999), Verdict::WaitUntil(t0 + 30_000));
    assert_eq!(at(&[t0], t0 + 30_000), Verdict::Order);
    let t1 = t0 + 30_000;
    // The second wait would be 60 s; it is capped at 45 s.
    assert_eq!(at(&[t0, t1], t1 + 1), Verdict::WaitUntil(t1 + 45_000));
    assert_eq!(at(&[t0, t1], t1 + 45_000), Verdict::Order);
    let t2 = t1 + 45_000;
    match at(&[t0, t1, t2], t2 + 1_000_000) {
        Verdict::GiveUp(reason) => assert_eq!(reason, "3 recoveries within 3600 s already"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_huge_count_never_overflows_the_wait() {
    let p = RecoveryPolicy {
        max: u32::MAX,
        ..RecoveryPolicy::default()
    };
    let ordered: Vec<i64> = (0..100).collect();
    let v = judge(
        &p,
        &failure(),
        Some(&instance("lost")),
        Some(&host()),
        &ordered,
        50,
    );
    assert_eq!(v, Verdict::WaitUntil(99 + 600_000));
}
