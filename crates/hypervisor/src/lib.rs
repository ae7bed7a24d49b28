//! tether-hypervisor.
