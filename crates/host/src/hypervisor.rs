//! Building the configured [`Hypervisor`] backend.

use std::sync::Arc;

use tether_hypervisor::{ExecBackend, Hypervisor, LogBackend, QmpBackend, VirshBackend};

use crate::config::{ConfigError, HostConfig, HypervisorKind};
use crate::HostError;

/// The backend named by `config.hypervisor`, with its settings checked.
pub fn build_hypervisor(config: &HostConfig) -> Result<Arc<dyn Hypervisor>, HostError> {
    Ok(match config.hypervisor {
        HypervisorKind::Log => Arc::new(LogBackend::new()),
        HypervisorKind::Exec => {
            let template = required(&config.exec_template, "exec_template", "--hypervisor exec")?;
            Arc::new(ExecBackend::new(template).map_err(HostError::Hypervisor)?)
        }
        HypervisorKind::Qmp => {
            let template = required(&config.qmp_template, "qmp_template", "--hypervisor qmp")?;
            if !template.contains("{uuid}") {
                return Err(HostError::Config(ConfigError::Invalid {
                    key: "qmp_template",
                    message: "must contain {uuid}".into(),
                }));
            }
            Arc::new(QmpBackend::new(template.to_owned()))
        }
        HypervisorKind::Virsh => Arc::new(VirshBackend::new(config.virsh.clone())),
    })
}

fn required<'a>(
    value: &'a Option<String>,
    key: &'static str,
    by: &str,
) -> Result<&'a str, HostError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            HostError::Config(ConfigError::Invalid {
                key,
                message: format!("is required by {by}"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_is_built_from_its_settings() {
        let mut config = HostConfig::default();
        assert_eq!(build_hypervisor(&config).unwrap().name(), "log");
        config.hypervisor = HypervisorKind::Exec;
        let err = build_hypervisor(&config).err().unwrap().to_string();
        assert!(err.contains("exec_template"), "{err}");
        config.exec_template = Some("/bin/true {action} {uuid}".into());
        assert_eq!(build_hypervisor(&config).unwrap().name(), "exec");
        config.hypervisor = HypervisorKind::Qmp;
        config.qmp_template = Some("/run/qmp.sock".into());
        assert!(build_hypervisor(&config).is_err());
        config.qmp_template = Some("/run/{uuid}.qmp".into());
        assert_eq!(build_hypervisor(&config).unwrap().name(), "qmp");
        config.hypervisor = HypervisorKind::Virsh;
        assert_eq!(build_hypervisor(&config).unwrap().name(), "virsh");
    }
}
