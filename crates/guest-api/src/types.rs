//! The named values carried in frames: corrective actions, lifecycle events, notification
//! types and vote results, with the numbers of the wire (and of the C API's enums) and their
//! text names.
//!
//! A number outside a type's range maps to its `Unknown` value.

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $num:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $num,)*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value of wire number `n` (`Unknown` when out of range).
            pub fn from_wire(n: u32) -> $name {
                match n {
                    $($num => $name::$variant,)*
                    _ => $name::Unknown,
                }
            }

            /// The wire number.
            pub fn wire(self) -> u32 {
                self as u32
            }

            /// The text name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The text name as a C string.
            pub(crate) fn as_cstr(self) -> &'static std::ffi::CStr {
                match self {
                    $($name::$variant => {
                        const S: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
                            concat!($text, "\0").as_bytes(),
                        ) {
                            Ok(s) => s,
                            Err(_) => panic!("no inner NUL"),
                        };
                        S
                    })*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// What the host should do about an unhealthy application.
    Action {
        /// Not set.
        Unknown = 0, "unknown";
        /// Nothing.
        None = 1, "none";
        /// Reboot the VM.
        Reboot = 2, "reboot";
        /// Stop the VM.
        Stop = 3, "stop";
        /// Only log.
        Log = 4, "log";
    }
}

wire_enum! {
    /// A lifecycle event of the VM.
    Event {
        /// Not set.
        Unknown = 0, "unknown";
        /// Stop.
        Stop = 1, "stop";
        /// Reboot.
        Reboot = 2, "reboot";
        /// Suspend.
        Suspend = 3, "suspend";
        /// Pause.
        Pause = 4, "pause";
        /// Unpause.
        Unpause = 5, "unpause";
        /// Resume.
        Resume = 6, "resume";
        /// Resize begins.
        ResizeBegin = 7, "resize_begin";
        /// Resize ended.
        ResizeEnd = 8, "resize_end";
        /// Live migration begins.
        LiveMigrateBegin = 9, "live_migrate_begin";
        /// Live migration ended.
        LiveMigrateEnd = 10, "live_migrate_end";
        /// Cold migration begins.
        ColdMigrateBegin = 11, "cold_migrate_begin";
        /// Cold migration ended.
        ColdMigrateEnd = 12, "cold_migrate_end";
    }
}

wire_enum! {
    /// Whether an action is put to a vote or only announced.
    Notify {
        /// Not set.
        Unknown = 0, "unknown";
        /// A vote: answer accept or reject.
        Revocable = 1, "revocable";
        /// A notification: answer complete when ready.
        Irrevocable = 2, "irrevocable";
    }
}

wire_enum! {
    /// An application's answer to an action.
    Vote {
        /// Not set.
        Unknown = 0, "unknown";
        /// Go ahead.
        Accept = 1, "accept";
        /// Do not.
        Reject = 2, "reject";
        /// Ready for an irrevocable action.
        Complete = 3, "complete";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_out_of_range_is_unknown() {
        for a in Action::ALL {
            assert_eq!(Action::from_wire(a.wire()), *a);
            assert_eq!(a.as_cstr().to_str().ok(), Some(a.as_str()));
        }
        for e in Event::ALL {
            assert_eq!(Event::from_wire(e.wire()), *e);
        }
        assert_eq!(Event::ALL.len(), 13);
        assert_eq!(Event::from_wire(13), Event::Unknown);
        assert_eq!(Action::from_wire(u32::MAX), Action::Unknown);
        assert_eq!(Notify::from_wire(2), Notify::Irrevocable);
        assert_eq!(Vote::from_wire(3).as_str(), "complete");
        assert_eq!(Event::LiveMigrateBegin.to_string(), "live_migrate_begin");
    }
}
