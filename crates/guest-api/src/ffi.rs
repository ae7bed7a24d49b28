//! The C API, source-compatible with the StarlingX guest heartbeat library.
//!
//! One process-wide [`Client`] sits behind a mutex. Callbacks are always called with the mutex
//! released, so a callback may call back into the API (an `action_notify` callback that answers
//! at once, for instance). Enumerations are plain `int`s with named constants: a value from C
//! outside a range is read as "unknown", never trusted.
//!
//! The socket path is `/var/run/.guest_heartbeat_api`, or the value of the environment variable
//! `GUEST_HEARTBEAT_API_SOCKET` at `guest_heartbeat_api_initialize` time.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};
use std::sync::{Mutex, MutexGuard};

use crate::client::{Client, ClientError, ClientEvent, HealthReport, Registration};
use crate::types::{Action, Event, Notify, Vote};
use crate::wire::{LOG_SIZE, NAME_SIZE};

/// The size of `application_name`.
pub const GUEST_HEARTBEAT_API_APPLICATION_NAME_MAX: usize = 40;
/// The size of a `log_msg` buffer.
pub const GUEST_HEARTBEAT_API_LOG_MAX: usize = 192;
const _: () = assert!(GUEST_HEARTBEAT_API_APPLICATION_NAME_MAX == NAME_SIZE);
const _: () = assert!(GUEST_HEARTBEAT_API_LOG_MAX == LOG_SIZE);

/// A result code.
pub type GuestApiErrorT = c_int;
/// Success.
pub const GUEST_API_OKAY: GuestApiErrorT = 0;
/// The daemon could not be reached; try again later.
pub const GUEST_API_TRY_AGAIN: GuestApiErrorT = 1;
/// Failure.
pub const GUEST_API_FAILED: GuestApiErrorT = 2;

/// A corrective action (see the `GUEST_HEARTBEAT_API_ACTION_*` values).
pub type GuestHeartbeatApiActionT = c_int;
/// Not set.
pub const GUEST_HEARTBEAT_API_ACTION_UNKNOWN: GuestHeartbeatApiActionT = 0;
/// Nothing.
pub const GUEST_HEARTBEAT_API_ACTION_NONE: GuestHeartbeatApiActionT = 1;
/// Reboot the VM.
pub const GUEST_HEARTBEAT_API_ACTION_REBOOT: GuestHeartbeatApiActionT = 2;
/// Stop the VM.
pub const GUEST_HEARTBEAT_API_ACTION_STOP: GuestHeartbeatApiActionT = 3;
/// Log only.
pub const GUEST_HEARTBEAT_API_ACTION_LOG: GuestHeartbeatApiActionT = 4;
/// One past the last action.
pub const GUEST_HEARTBEAT_API_ACTION_MAX: GuestHeartbeatApiActionT = 5;

/// A lifecycle event (0 unknown, 1 stop, 2 reboot, 3 suspend, 4 pause, 5 unpause, 6 resume,
/// 7 resize begin, 8 resize end, 9 live migrate begin, 10 live migrate end, 11 cold migrate
/// begin, 12 cold migrate end).
pub type GuestHeartbeatApiEventT = c_int;
/// Not set.
pub const GUEST_HEARTBEAT_API_EVENT_UNKNOWN: GuestHeartbeatApiEventT = 0;
/// Stop.
pub const GUEST_HEARTBEAT_API_EVENT_STOP: GuestHeartbeatApiEventT = 1;
/// Reboot.
pub const GUEST_HEARTBEAT_API_EVENT_REBOOT: GuestHeartbeatApiEventT = 2;
/// Suspend.
pub const GUEST_HEARTBEAT_API_EVENT_SUSPEND: GuestHeartbeatApiEventT = 3;
/// Pause.
pub const GUEST_HEARTBEAT_API_EVENT_PAUSE: GuestHeartbeatApiEventT = 4;
/// Unpause.
pub const GUEST_HEARTBEAT_API_EVENT_UNPAUSE: GuestHeartbeatApiEventT = 5;
/// Resume.
pub const GUEST_HEARTBEAT_API_EVENT_RESUME: GuestHeartbeatApiEventT = 6;
/// Resize begins.
pub const GUEST_HEARTBEAT_API_EVENT_RESIZE_BEGIN: GuestHeartbeatApiEventT = 7;
/// Resize ended.
pub const GUEST_HEARTBEAT_API_EVENT_RESIZE_END: GuestHeartbeatApiEventT = 8;
/// Live migration begins.
pub const GUEST_HEARTBEAT_API_EVENT_LIVE_MIGRATE_BEGIN: GuestHeartbeatApiEventT = 9;
/// Live migration ended.
pub const GUEST_HEARTBEAT_API_EVENT_LIVE_MIGRATE_END: GuestHeartbeatApiEventT = 10;
/// Cold migration begins.
pub const GUEST_HEARTBEAT_API_EVENT_COLD_MIGRATE_BEGIN: GuestHeartbeatApiEventT = 11;
/// Cold migration ended.
pub const GUEST_HEARTBEAT_API_EVENT_COLD_MIGRATE_END: GuestHeartbeatApiEventT = 12;
/// One past the last event.
pub const GUEST_HEARTBEAT_API_EVENT_MAX: GuestHeartbeatApiEventT = 13;

/// Vote or notification.
pub type GuestHeartbeatApiNotifyTypeT = c_int;
/// Not set.
pub const GUEST_HEARTBEAT_API_NOTIFY_TYPE_UNKNOWN: GuestHeartbeatApiNotifyTypeT = 0;
/// A vote: answer accept or reject.
pub const GUEST_HEARTBEAT_API_NOTIFY_TYPE_REVOCABLE: GuestHeartbeatApiNotifyTypeT = 1;
/// A notification: answer complete.
pub const GUEST_HEARTBEAT_API_NOTIFY_TYPE_IRREVOCABLE: GuestHeartbeatApiNotifyTypeT = 2;
/// One past the last type.
pub const GUEST_HEARTBEAT_API_NOTIFY_TYPE_MAX: GuestHeartbeatApiNotifyTypeT = 3;

/// An answer to an action.
pub type GuestHeartbeatApiVoteResultT = c_int;
/// Not set.
pub const GUEST_HEARTBEAT_API_VOTE_RESULT_UNKNOWN: GuestHeartbeatApiVoteResultT = 0;
/// Accept the action.
pub const GUEST_HEARTBEAT_API_VOTE_RESULT_ACCEPT: GuestHeartbeatApiVoteResultT = 1;
/// Reject the action.
pub const GUEST_HEARTBEAT_API_VOTE_RESULT_REJECT: GuestHeartbeatApiVoteResultT = 2;
/// Ready for the action.
pub const GUEST_HEARTBEAT_API_VOTE_RESULT_COMPLETE: GuestHeartbeatApiVoteResultT = 3;
/// One past the last result.
pub const GUEST_HEARTBEAT_API_VOTE_RESULT_MAX: GuestHeartbeatApiVoteResultT = 4;

/// What an application registers with.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GuestHeartbeatApiInitDataT {
    /// NUL-terminated name.
    pub application_name: [c_char; GUEST_HEARTBEAT_API_APPLICATION_NAME_MAX],
    /// At least 400.
    pub heartbeat_interval_ms: c_int,
    /// Seconds a vote may take.
    pub vote_secs: c_int,
    /// Seconds a shutdown notification may take.
    pub shutdown_notice_secs: c_int,
    /// Seconds a suspend notification may take.
    pub suspend_notice_secs: c_int,
    /// Seconds a resume notification may take.
    pub resume_notice_secs: c_int,
    /// Action on heartbeat timeout.
    pub corrective_action: GuestHeartbeatApiActionT,
}

/// Registration accepted (true), refused or lost (false).
pub type GuestHeartbeatApiRegisterStateCallbackT = Option<extern "C" fn(state: bool)>;
/// Fill in the health, action and a NUL-terminated reason of at most 192 bytes.
pub type GuestHeartbeatApiHealthCheckCallbackT = Option<
    extern "C" fn(
        health: *mut bool,
        corrective_action: *mut GuestHeartbeatApiActionT,
        log_msg: *mut c_char,
    ),
>;
/// An action to vote on or to prepare for.
pub type GuestHeartbeatApiActionNotifyCallbackT = Option<
    extern "C" fn(
        invocation_id: c_int,
        event: GuestHeartbeatApiEventT,
        notify_type: GuestHeartbeatApiNotifyTypeT,
    ),
>;

/// The three callbacks; all are required.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GuestHeartbeatApiCallbacksT {
    /// Registration changes.
    pub register_state: GuestHeartbeatApiRegisterStateCallbackT,
    /// Health checks.
    pub health_check: GuestHeartbeatApiHealthCheckCallbackT,
    /// Actions.
    pub action_notify: GuestHeartbeatApiActionNotifyCallbackT,
}

struct Library {
    client: Client,
    register_state: extern "C" fn(bool),
    health_check: extern "C" fn(*mut bool, *mut GuestHeartbeatApiActionT, *mut c_char),
    action_notify: extern "C" fn(c_int, GuestHeartbeatApiEventT, GuestHeartbeatApiNotifyTypeT),
}

static LIBRARY: Mutex<Option<Library>> = Mutex::new(None);

fn library() -> MutexGuard<'static, Option<Library>> {
    LIBRARY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn code(result: Result<(), ClientError>) -> GuestApiErrorT {
    match result {
        Ok(()) => GUEST_API_OKAY,
        Err(ClientError::TryAgain(_)) => GUEST_API_TRY_AGAIN,
        Err(_) => GUEST_API_FAILED,
    }
}

/// A C string of at most `max` bytes, read up to its NUL; empty for NULL.
///
/// # Safety
/// `ptr` is NULL or points to at least `max` readable bytes or a NUL-terminated string.
unsafe fn text(ptr: *const c_char, max: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller guarantees `max` readable bytes or a NUL before them.
    while len < max && unsafe { *ptr.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes were just read.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

fn non_negative(v: c_int) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn enum_of(v: c_int) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Sets the library up with `callbacks` (all three required).
///
/// # Safety
/// `callbacks` is NULL or points to a valid `GuestHeartbeatApiCallbacksT`.
#[no_mangle]
pub unsafe extern "C" fn guest_heartbeat_api_initialize(
    callbacks: *const GuestHeartbeatApiCallbacksT,
) -> GuestApiErrorT {
    // SAFETY: the caller passes NULL or a valid pointer.
    let Some(callbacks) = (unsafe { callbacks.as_ref() }) else {
        return GUEST_API_FAILED;
    };
    let (Some(register_state), Some(health_check), Some(action_notify)) = (
        callbacks.register_state,
        callbacks.health_check,
        callbacks.action_notify,
    ) else {
        return GUEST_API_FAILED;
    };
    let path = std::env::var_os("GUEST_HEARTBEAT_API_SOCKET")
        .unwrap_or_else(|| crate::client::DEFAULT_SOCKET.into());
    *library() = Some(Library {
        client: Client::new(path),
        register_state,
        health_check,
        action_notify,
    });
    GUEST_API_OKAY
}

/// Closes the socket and forgets the callbacks.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_finalize() -> GuestApiErrorT {
    *library() = None;
    GUEST_API_OKAY
}

/// Connects if needed and sends the registration; the answer comes through `register_state`.
///
/// # Safety
/// `init_data` is NULL or points to a valid `GuestHeartbeatApiInitDataT`.
#[no_mangle]
pub unsafe extern "C" fn guest_heartbeat_api_register(
    init_data: *const GuestHeartbeatApiInitDataT,
) -> GuestApiErrorT {
    // SAFETY: the caller passes NULL or a valid pointer.
    let Some(init) = (unsafe { init_data.as_ref() }) else {
        return GUEST_API_FAILED;
    };
    let registration = Registration {
        // SAFETY: `application_name` is an array of exactly that many bytes.
        name: unsafe { text(init.application_name.as_ptr(), NAME_SIZE) },
        heartbeat_interval_ms: non_negative(init.heartbeat_interval_ms),
        vote_secs: non_negative(init.vote_secs),
        shutdown_notice_secs: non_negative(init.shutdown_notice_secs),
        suspend_notice_secs: non_negative(init.suspend_notice_secs),
        resume_notice_secs: non_negative(init.resume_notice_secs),
        corrective_action: Action::from_wire(enum_of(init.corrective_action)),
    };
    match library().as_mut() {
        Some(lib) => code(lib.client.register(&registration)),
        None => GUEST_API_FAILED,
    }
}

/// Sends the deregistration.
///
/// # Safety
/// `log_msg` is NULL or a NUL-terminated string (or at least 192 readable bytes).
#[no_mangle]
pub unsafe extern "C" fn guest_heartbeat_api_deregister(log_msg: *const c_char) -> GuestApiErrorT {
    // SAFETY: as documented for the caller.
    let log = unsafe { text(log_msg, LOG_SIZE) };
    match library().as_mut() {
        Some(lib) => code(lib.client.deregister(&log)),
        None => GUEST_API_FAILED,
    }
}

/// Answers an action.
///
/// # Safety
/// `log_msg` is NULL or a NUL-terminated string (or at least 192 readable bytes).
#[no_mangle]
pub unsafe extern "C" fn guest_heartbeat_api_send_action_response(
    invocation_id: c_int,
    event: GuestHeartbeatApiEventT,
    notify_type: GuestHeartbeatApiNotifyTypeT,
    vote_result: GuestHeartbeatApiVoteResultT,
    log_msg: *const c_char,
) -> GuestApiErrorT {
    // SAFETY: as documented for the caller.
    let log = unsafe { text(log_msg, LOG_SIZE) };
    match library().as_mut() {
        Some(lib) => code(lib.client.send_action_response(
            invocation_id as u32,
            Event::from_wire(enum_of(event)),
            Notify::from_wire(enum_of(notify_type)),
            Vote::from_wire(enum_of(vote_result)),
            &log,
        )),
        None => GUEST_API_FAILED,
    }
}

/// The socket to wait on, or -1 while not connected.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_get_selobj() -> c_int {
    library().as_ref().map_or(-1, |lib| lib.client.raw_fd())
}

/// Handles what arrived on the socket; call when it is readable.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_dispatch(_selobj: c_int) {
    let Some((events, register_state, health_check, action_notify)) =
        library().as_mut().map(|lib| {
            let events = lib.client.read_events();
            (
                events,
                lib.register_state,
                lib.health_check,
                lib.action_notify,
            )
        })
    else {
        return;
    };
    for event in events {
        match event {
            ClientEvent::RegisterState(state) => register_state(state),
            ClientEvent::Challenge(challenge) => {
                let report = ask_health(health_check);
                if let Some(lib) = library().as_mut() {
                    let _ = lib.client.respond_health(challenge, &report);
                }
            }
            ClientEvent::ActionNotify {
                invocation_id,
                event,
                notify,
            } => action_notify(
                invocation_id as c_int,
                event.wire() as c_int,
                notify.wire() as c_int,
            ),
        }
    }
}

fn ask_health(
    health_check: extern "C" fn(*mut bool, *mut GuestHeartbeatApiActionT, *mut c_char),
) -> HealthReport {
    let mut healthy = true;
    let mut action = GUEST_HEARTBEAT_API_ACTION_NONE;
    let mut log = [0 as c_char; LOG_SIZE];
    health_check(&mut healthy, &mut action, log.as_mut_ptr());
    log[LOG_SIZE - 1] = 0;
    HealthReport {
        healthy,
        corrective_action: Action::from_wire(enum_of(action)),
        // SAFETY: `log` is LOG_SIZE bytes and NUL-terminated.
        log_msg: unsafe { text(log.as_ptr(), LOG_SIZE) },
    }
}

/// The name of an action.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_action_str(
    action: GuestHeartbeatApiActionT,
) -> *const c_char {
    Action::from_wire(enum_of(action)).as_cstr().as_ptr()
}

/// The name of an event.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_event_str(event: GuestHeartbeatApiEventT) -> *const c_char {
    Event::from_wire(enum_of(event)).as_cstr().as_ptr()
}

/// The name of a notification type.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_notify_str(
    notify: GuestHeartbeatApiNotifyTypeT,
) -> *const c_char {
    Notify::from_wire(enum_of(notify)).as_cstr().as_ptr()
}

/// The name of a vote result.
#[no_mangle]
pub extern "C" fn guest_heartbeat_api_vote_result_str(
    vote_result: GuestHeartbeatApiVoteResultT,
) -> *const c_char {
    Vote::from_wire(enum_of(vote_result)).as_cstr().as_ptr()
}

/// The name of a result code.
#[no_mangle]
pub extern "C" fn guest_api_error_str(error: GuestApiErrorT) -> *const c_char {
    match error {
        GUEST_API_OKAY => c"okay",
        GUEST_API_TRY_AGAIN => c"try-again",
        _ => c"failed",
    }
    .as_ptr()
}
