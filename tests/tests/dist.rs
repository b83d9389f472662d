//! What `dist/` ships for running rstwatch as a service: the systemd unit passes
//! `systemd-analyze verify` and keeps its sandbox, the example configuration and the
//! Kubernetes ConfigMap's are accepted by `rstwatch watch --config`, and the DaemonSet asks for
//! exactly what rstwatch needs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use rstwatch_tests::watch::rstwatch_binary;
use serde_json::Value;

fn dist(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(file)
}

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("rstwatch-dist-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_config(config: &Path) -> toml::Table {
    let output = Command::new(rstwatch_binary().unwrap())
        .args(["watch", "--print-config", "--config"])
        .arg(config)
        .env_remove("RSTWATCH_NODE_NAME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{config:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().parse().unwrap()
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The unit's `Key=value` lines.
fn directive<'u>(unit: &'u str, key: &str) -> &'u str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
}

/// The unit as installed, with `ExecStart` running this build's binary: `systemd-analyze
/// verify` checks that the executable exists.
fn installed_unit(dir: &TempDir) -> PathBuf {
    let unit = std::fs::read_to_string(dist("rstwatch.service")).unwrap();
    let binary = rstwatch_binary().unwrap();
    let unit = unit.replace("/usr/bin/rstwatch", binary.to_str().unwrap());
    let path = dir.0.join("rstwatch.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let dir = TempDir::new("verify");
    let unit = installed_unit(&dir);
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    succeeded(&output);
    // Unknown keys and unparsable values are warnings, not failures: none is allowed.
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "systemd-analyze complained"
    );
}

#[test]
fn the_systemd_unit_runs_unprivileged_with_three_capabilities_in_a_sandbox() {
    let text = std::fs::read_to_string(dist("rstwatch.service")).unwrap();
    let capabilities = "CAP_BPF CAP_NET_ADMIN CAP_PERFMON";
    assert_eq!(directive(&text, "DynamicUser"), "yes");
    assert_eq!(directive(&text, "AmbientCapabilities"), capabilities);
    assert_eq!(directive(&text, "CapabilityBoundingSet"), capabilities);
    assert_eq!(directive(&text, "NoNewPrivileges"), "yes");
    assert_eq!(directive(&text, "ProtectSystem"), "strict");
    assert_eq!(directive(&text, "StateDirectory"), "rstwatch");
    let syscalls: Vec<&str> = directive(&text, "SystemCallFilter").split(' ').collect();
    assert!(syscalls.contains(&"bpf") && syscalls.contains(&"perf_event_open"));
    let families: Vec<&str> = directive(&text, "RestrictAddressFamilies")
        .split(' ')
        .collect();
    for family in ["AF_NETLINK", "AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.contains(&family), "{family} not allowed");
    }
    assert!(directive(&text, "ExecStart").contains("--config /etc/rstwatch/rstwatch.toml"));

    // systemd's own reading of the sandbox: exposure stays in its "OK" band (below 4).
    let dir = TempDir::new("security");
    let unit = installed_unit(&dir);
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = succeeded(&output);
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for rstwatch.service: "))
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in {report}"));
    assert!(exposure < 4.0, "exposure {exposure}:\n{report}");
}

#[test]
fn the_example_configuration_is_accepted_and_spools_into_the_state_directory() {
    let config = print_config(&dist("rstwatch.toml"));
    assert_eq!(config["iface"], toml::Value::Array(vec!["eth0".into()]));
    assert_eq!(config["metrics"], "0.0.0.0:9464".into());
    let spool = config["spool-dir"].as_str().unwrap();
    assert!(spool.starts_with("/var/lib/rstwatch/"), "{spool}");
}

/// Every document of the Kubernetes manifest, as JSON.
fn manifest() -> Vec<Value> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(std::fs::File::open(dist("kubernetes/rstwatch.yaml")).unwrap())
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 with PyYAML (Debian package python3-yaml) must be installed");
    serde_json::from_str(&succeeded(&output)).unwrap()
}

fn of_kind<'m>(manifest: &'m [Value], kind: &str) -> &'m Value {
    manifest
        .iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

#[test]
fn the_daemonset_runs_on_the_host_network_with_three_capabilities_and_its_configmap() {
    let manifest = manifest();
    let daemonset = of_kind(&manifest, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "PERFMON"])
    );
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(security.get("privileged").is_none());

    let node_name = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|env| env["name"] == "RSTWATCH_NODE_NAME")
        .expect("the node name is passed to rstwatch");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // The ConfigMap's configuration is one rstwatch accepts, and agrees with the pod spec.
    let configmap = of_kind(&manifest, "ConfigMap");
    let dir = TempDir::new("configmap");
    let path = dir.0.join("rstwatch.toml");
    std::fs::write(&path, configmap["data"]["rstwatch.toml"].as_str().unwrap()).unwrap();
    let config = print_config(&path);
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(args, ["watch", "--config", "/etc/rstwatch/rstwatch.toml"]);
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|mount| mount["name"] == volume)
            .and_then(|mount| mount["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
    };
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(mount_of("config"), "/etc/rstwatch");
    assert_eq!(
        volume("config")["configMap"]["name"],
        configmap["metadata"]["name"]
    );
    let spool = config["spool-dir"].as_str().unwrap();
    assert!(spool.starts_with(mount_of("spool")), "{spool}");
    assert!(volume("spool")["hostPath"]["path"].is_string());

    let metrics_port: u64 = config["metrics"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(container["ports"][0]["containerPort"], metrics_port);
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_rstwatch_serves() {
    use rstwatch::{
        daemon::metrics::{render, SinkRecords, Snapshot},
        kernel::Counters,
        pipeline::PipelineStats,
        sink::metrics::{ResetCounts, ResetLabels},
    };
    // A family appears once it has a series: one reset, one table, one sink.
    let resets = ResetCounts::default();
    resets
        .get_or_create(&ResetLabels {
            class: "refused",
            sender: "responder",
            middlebox: "false",
            direction: "ingress",
            interface: "eth0".into(),
        })
        .inc();
    let page = render(
        &resets,
        &Snapshot {
            kernel: Counters([0; rstwatch_common::COUNTER_COUNT as usize]),
            flows_live: 0,
            flow_reads_torn: 0,
            flow_capacity: vec![("ipv4", 1024)],
            pipeline: PipelineStats::default(),
            held: 0,
            sinks: vec![SinkRecords {
                sink: "output",
                sent: 1,
                dropped: 0,
                spooled: 0,
            }],
            stack: None,
        },
    );
    let served: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dist("grafana-dashboard.json")).unwrap())
            .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("rstwatch_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    served.contains(&name.as_str()),
                    "{name} is not served: {served:?}"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "the dashboard queries {queried} metrics");
}
