//! The C entry points called as C would call them: string helpers, argument checks, and the
//! TRY_AGAIN answer while no daemon listens. One test: the library's state is process-wide.

#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::ffi::{c_char, c_int, CStr};

use guest_heartbeat_api::ffi::*;

extern "C" fn on_register(_: bool) {}
extern "C" fn on_health(_: *mut bool, _: *mut GuestHeartbeatApiActionT, _: *mut c_char) {}
extern "C" fn on_action(_: c_int, _: GuestHeartbeatApiEventT, _: GuestHeartbeatApiNotifyTypeT) {}

fn text(ptr: *const c_char) -> String {
    // SAFETY: the helpers return pointers to static NUL-terminated strings.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned()
}

#[test]
fn the_c_entry_points_check_their_arguments_and_say_try_again_without_a_daemon() {
    assert_eq!(
        text(guest_heartbeat_api_action_str(
            GUEST_HEARTBEAT_API_ACTION_STOP
        )),
        "stop"
    );
    assert_eq!(
        text(guest_heartbeat_api_event_str(
            GUEST_HEARTBEAT_API_EVENT_RESIZE_BEGIN
        )),
        "resize_begin"
    );
    assert_eq!(text(guest_heartbeat_api_event_str(-1)), "unknown");
    assert_eq!(
        text(guest_heartbeat_api_notify_str(
            GUEST_HEARTBEAT_API_NOTIFY_TYPE_IRREVOCABLE
        )),
        "irrevocable"
    );
    assert_eq!(text(guest_heartbeat_api_vote_result_str(99)), "unknown");
    assert_eq!(text(guest_api_error_str(GUEST_API_TRY_AGAIN)), "try-again");

    let mut init = GuestHeartbeatApiInitDataT {
        application_name: [0; GUEST_HEARTBEAT_API_APPLICATION_NAME_MAX],
        heartbeat_interval_ms: 1000,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: GUEST_HEARTBEAT_API_ACTION_REBOOT,
    };
    for (i, b) in b"ffi-app".iter().enumerate() {
        init.application_name[i] = *b as c_char;
    }
    // SAFETY: NULL and valid pointers, as C callers pass them.
    unsafe {
        assert_eq!(
            guest_heartbeat_api_register(&init),
            GUEST_API_FAILED,
            "not initialized"
        );
        assert_eq!(
            guest_heartbeat_api_initialize(std::ptr::null()),
            GUEST_API_FAILED
        );
        let partial = GuestHeartbeatApiCallbacksT {
            register_state: Some(on_register),
            health_check: None,
            action_notify: Some(on_action),
        };
        assert_eq!(guest_heartbeat_api_initialize(&partial), GUEST_API_FAILED);
        let dir = tether_testkit::temp_dir();
        std::env::set_var("GUEST_HEARTBEAT_API_SOCKET", dir.path().join("absent.sock"));
        let callbacks = GuestHeartbeatApiCallbacksT {
            health_check: Some(on_health),
            ..partial
        };
        assert_eq!(guest_heartbeat_api_initialize(&callbacks), GUEST_API_OKAY);
        assert_eq!(
            guest_heartbeat_api_register(std::ptr::null()),
            GUEST_API_FAILED
        );
        assert_eq!(guest_heartbeat_api_register(&init), GUEST_API_TRY_AGAIN);
        assert_eq!(guest_heartbeat_api_get_selobj(), -1);
        assert_eq!(
            guest_heartbeat_api_deregister(std::ptr::null()),
            GUEST_API_FAILED
        );
        guest_heartbeat_api_dispatch(-1);
        assert_eq!(guest_heartbeat_api_finalize(), GUEST_API_OKAY);
    }
}
