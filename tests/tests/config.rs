//! `rstwatch watch --config FILE`: the file's options under their long names, the command line
//! over the file, and mistakes in the file reported at their line with exit code 2.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use rstwatch_tests::watch::rstwatch_binary;

/// A configuration file in a directory of its own, removed when dropped.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("rstwatch-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rstwatch.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rstwatch(args: &[&str], config: &Path) -> Output {
    Command::new(rstwatch_binary().unwrap())
        .arg("watch")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn effective(args: &[&str], config: &Path) -> toml::Table {
    let output = rstwatch(args, config);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().parse().unwrap()
}

/// One line on stderr, exit code 2.
fn user_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn the_command_line_wins_over_the_file_and_the_file_over_the_defaults() {
    let file = ConfigFile::new(
        "precedence",
        "iface = [\"eth0\", \"eth1\"]\nport = [443, 8443]\nformat = \"ecs\"\n\
         idle-timeout = \"45s\"\nno-egress = true\n",
    );
    let config = effective(
        &["--print-config", "-i", "veth9", "--idle-timeout", "2m"],
        &file.path,
    );
    // A list given on the command line replaces the file's list entirely.
    assert_eq!(config["iface"], toml::Value::Array(vec!["veth9".into()]));
    assert_eq!(config["idle-timeout"], "2m".into());
    // The file's values stand where the command line says nothing.
    assert_eq!(
        config["port"],
        toml::Value::Array(vec![443.into(), 8443.into()])
    );
    assert_eq!(config["format"], "ecs".into());
    assert_eq!(config["no-egress"], true.into());
    // And the defaults where neither does.
    assert_eq!(config["hold"], "300ms".into());
    assert_eq!(config["xdp-mode"], "auto".into());
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_its_line() {
    let file = ConfigFile::new(
        "unknown",
        "# rstwatch on the edge routers\niface = \"eth0\"\n\nidle_timeout = \"45s\"\n",
    );
    let stderr = user_error(&rstwatch(&["--print-config"], &file.path));
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("unknown key 'idle_timeout'"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_or_out_of_range_is_an_error_at_its_line() {
    for (text, line, says) in [
        (
            "iface = \"eth0\"\nno-egress = \"yes\"\n",
            "line 2",
            "true or false",
        ),
        (
            "iface = \"eth0\"\nformat = [\"json\"]\n",
            "line 2",
            "not an array",
        ),
        (
            "iface = \"eth0\"\n\nflows = 12\n",
            "line 3",
            "1024 to 16777216",
        ),
        (
            "iface = \"eth0\"\nformat = \"xml\"\n",
            "line 2",
            "invalid value 'xml'",
        ),
        ("iface = \"eth0\"\n[syslog]\n", "line 2", "takes one value"),
        ("iface = [\"eth0\"\n", "line 1", "unclosed array"),
    ] {
        let file = ConfigFile::new("bad-value", text);
        let stderr = user_error(&rstwatch(&["--print-config"], &file.path));
        assert!(stderr.contains(line), "{text:?}: {stderr}");
        assert!(stderr.contains(says), "{text:?}: {stderr}");
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let stderr = user_error(&rstwatch(
        &["-i", "eth0"],
        Path::new("/nonexistent/rstwatch.toml"),
    ));
    assert!(stderr.contains("/nonexistent/rstwatch.toml"), "{stderr}");
}

#[test]
fn print_config_round_trips_through_config() {
    let file = ConfigFile::new(
        "round-trip",
        "iface = [\"eth0\"]\nnet = [\"198.18.0.0/15\", \"2001:db8::/32\"]\nport = 443\n\
         format = \"json\"\ngrace = \"5s\"\naggregate-rate = \"off\"\n\
         syslog = \"tcp://198.18.0.9:6514\"\nspool-dir = \"/var/lib/rstwatch\"\n",
    );
    let printed = rstwatch(&["--print-config"], &file.path);
    assert!(printed.status.success(), "{printed:?}");
    let again = ConfigFile::new(
        "round-trip-again",
        &String::from_utf8_lossy(&printed.stdout),
    );
    let reprinted = rstwatch(&["--print-config"], &again.path);
    assert!(reprinted.status.success(), "{reprinted:?}");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        String::from_utf8_lossy(&reprinted.stdout)
    );
    let config: toml::Table = String::from_utf8_lossy(&printed.stdout).parse().unwrap();
    assert_eq!(config["aggregate-rate"], "off".into());
    assert_eq!(config["syslog"], "tcp://198.18.0.9:6514".into());
    assert_eq!(config["port"], toml::Value::Array(vec![443.into()]));
}
