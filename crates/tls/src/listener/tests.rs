use super::*;

#[test]
fn failures_are_logged_once_per_period_and_the_rest_counted() {
    let start = Instant::now();
    let mut log = FailureLog::default();
    assert_eq!(log.allow(start), Some(0));
    assert_eq!(log.allow(start + Duration::from_secs(1)), None);
    assert_eq!(
        log.allow(start + LOG_PERIOD - Duration::from_millis(1)),
        None
    );
    assert_eq!(log.allow(start + LOG_PERIOD), Some(2));
    assert_eq!(log.allow(start + LOG_PERIOD), None);
}

#[test]
fn the_plain_http_answer_is_well_formed() {
    let text = std::str::from_utf8(PLAIN_ANSWER).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length = format!("Content-Length: {}", body.len());
    assert!(head.contains(&length), "{head} / {body:?}");
}
