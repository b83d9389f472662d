//! `--config FILE`: a TOML file whose keys are a subcommand's long options, under the same
//! names (`iface = ["eth0"]`, `idle-timeout = "45s"`, `no-egress = true`).
//!
//! The file is turned into command-line arguments placed before the user's own, and the whole
//! is parsed by the one command-line definition: a value means the same in the file as on the
//! command line, and is checked by the same parser. An option given on the command line
//! replaces the file's value entirely (a list too: `-i eth1` replaces the file's `iface`).
//! Every mistake in the file names its line.

use std::{
    ffi::{OsStr, OsString},
    path::Path,
};

use clap::{error::ErrorKind, parser::ValueSource, Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

use crate::error::UserError;

/// The option that names the file.
const CONFIG: &str = "config";
/// The option that prints the effective configuration.
const PRINT_CONFIG: &str = "print-config";

/// `argv` with the options of the subcommand's `--config` file inserted after the subcommand's
/// name, leaving out every option the command line gives itself. Without `--config` (or when
/// the command line does not parse at all, which the caller then reports) `argv` comes back
/// as it was.
pub fn with_config_file(
    command: &Command,
    argv: Vec<OsString>,
) -> Result<Vec<OsString>, UserError> {
    // Lenient: the file may supply what the command line alone lacks (a required `-i`).
    let Ok(matches) = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
    else {
        return Ok(argv);
    };
    let Some((name, given)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(subcommand) = command.find_subcommand(name) else {
        return Ok(argv);
    };
    let Some(path) = config_path(subcommand, given) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path).map_err(|err| {
        UserError(format!(
            "cannot read --config {}: {err}: check the path and its permissions",
            path.display()
        ))
    })?;
    let from_file = arguments(subcommand, given, &path, &text)?;
    let position = argv
        .iter()
        .skip(1)
        .position(|arg| arg == name)
        .map_or(argv.len(), |index| index + 2);
    let mut merged = argv;
    merged.splice(position..position, from_file);
    Ok(merged)
}

/// The configuration in effect for the subcommand in `matches` as TOML (every option with a
/// value, defaults included), when it was asked for with `--print-config`.
pub fn print_requested(command: &Command, matches: &ArgMatches) -> Option<String> {
    let (name, given) = matches.subcommand()?;
    let subcommand = command.find_subcommand(name)?;
    let print = long_option(subcommand, PRINT_CONFIG)?;
    given
        .get_flag(print.get_id().as_str())
        .then(|| effective(subcommand, given))
}

fn long_option<'c>(subcommand: &'c Command, name: &str) -> Option<&'c Arg> {
    subcommand
        .get_arguments()
        .find(|arg| arg.get_long() == Some(name))
}

fn config_path(subcommand: &Command, given: &ArgMatches) -> Option<std::path::PathBuf> {
    let config = long_option(subcommand, CONFIG)?;
    given
        .get_raw(config.get_id().as_str())?
        .next()
        .map(std::path::PathBuf::from)
}

/// The file's options as `--name=value` arguments, checked against `subcommand`'s options.
fn arguments(
    subcommand: &Command,
    given: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, UserError> {
    let at = |offset: usize| Location {
        path,
        line: line_of(text, offset),
    };
    let table = DeTable::parse(text).map_err(|err| {
        let line = err.span().map_or(1, |span| line_of(text, span.start));
        UserError(format!(
            "{}: {}",
            Location { path, line },
            err.message().trim_end()
        ))
    })?;
    let mut arguments = Vec::new();
    for (key, value) in table.get_ref() {
        let name: &str = key.get_ref();
        let location = at(key.span().start);
        if name == CONFIG || name == PRINT_CONFIG {
            return Err(UserError(format!(
                "{location}: '{name}' cannot be set in a configuration file: give it on the \
                 command line"
            )));
        }
        let Some(arg) = option_named(subcommand, name) else {
            return Err(UserError(format!(
                "{location}: unknown key '{name}': the keys are the long options of `rstwatch \
                 {}` (its --help lists them)",
                subcommand.get_name()
            )));
        };
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let location = at(value.span().start);
        for word in words(arg, value.get_ref(), &location)? {
            check_value(subcommand, arg, &word, &location)?;
            arguments.push(OsString::from(format!("--{name}={word}")));
        }
        if is_flag(arg) && matches!(value.get_ref(), DeValue::Boolean(true)) {
            arguments.push(OsString::from(format!("--{name}")));
        }
    }
    Ok(arguments)
}

/// A subcommand's option of long name `name` that a file may set.
fn option_named<'c>(subcommand: &'c Command, name: &str) -> Option<&'c Arg> {
    if name == CONFIG || name == PRINT_CONFIG {
        return None;
    }
    long_option(subcommand, name)
        .filter(|arg| !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version))
}

fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// The values `value` gives option `arg`: none for a flag (its presence is the value), one for
/// an option, one per element for a repeatable option's array.
fn words(
    arg: &Arg,
    value: &DeValue<'_>,
    location: &Location<'_>,
) -> Result<Vec<String>, UserError> {
    let name = arg.get_long().unwrap_or_default();
    let wrong = |expected: &str| {
        UserError(format!(
            "{location}: '{name}' takes {expected}, not {}",
            kind_of(value)
        ))
    };
    if is_flag(arg) {
        return match value {
            DeValue::Boolean(_) => Ok(Vec::new()),
            _ => Err(wrong("true or false")),
        };
    }
    let expected = if takes_many(arg) {
        "a value or an array of values"
    } else {
        "one value (a string or a number)"
    };
    match value {
        DeValue::Array(items) if takes_many(arg) => items
            .iter()
            .map(|item| scalar(item.get_ref()).ok_or_else(|| wrong(expected)))
            .collect(),
        _ => scalar(value)
            .map(|word| vec![word])
            .ok_or_else(|| wrong(expected)),
    }
}

fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(text) => Some(text.to_string()),
        DeValue::Integer(number) => i64::from_str_radix(number.as_str(), number.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(number) => Some(number.as_str().to_string()),
        _ => None,
    }
}

fn kind_of(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Runs the option's own value parser on `word`, so that a bad value is reported at its line.
/// Other complaints (a missing `-i`, an option that needs another) are left to the parse of
/// the whole command line.
fn check_value(
    subcommand: &Command,
    arg: &Arg,
    word: &str,
    location: &Location<'_>,
) -> Result<(), UserError> {
    let name = arg.get_long().unwrap_or_default();
    let alone = subcommand
        .clone()
        .mut_args(|arg| arg.required(false))
        .try_get_matches_from([
            subcommand.get_name().to_string(),
            format!("--{name}={word}"),
        ]);
    match alone {
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first);
            Err(UserError(format!("{location}: {message}")))
        }
        _ => Ok(()),
    }
}

/// Every option of `subcommand` that has a value in `given`, as a TOML document.
fn effective(subcommand: &Command, given: &ArgMatches) -> String {
    let mut table = toml::Table::new();
    for arg in subcommand.get_arguments() {
        let Some(name) = arg.get_long() else {
            continue;
        };
        if option_named(subcommand, name).is_none() {
            continue;
        }
        let id = arg.get_id().as_str();
        let value = if is_flag(arg) {
            toml::Value::Boolean(given.get_flag(id))
        } else {
            let Some(raw) = given.get_raw(id) else {
                continue;
            };
            let mut values: Vec<toml::Value> = raw.map(value_of).collect();
            if takes_many(arg) {
                toml::Value::Array(values)
            } else {
                match values.pop() {
                    Some(value) => value,
                    None => continue,
                }
            }
        };
        table.insert(name.to_string(), value);
    }
    toml::to_string(&table).unwrap_or_default()
}

/// A command-line word as TOML: a number where it is one, a string otherwise.
fn value_of(word: &OsStr) -> toml::Value {
    let text = word.to_string_lossy();
    let is_number = !text.is_empty() && text.len() < 19 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<i64>() {
        Ok(number) if is_number => toml::Value::Integer(number),
        _ => toml::Value::String(text.into_owned()),
    }
}

/// A place in the configuration file, as messages show it.
struct Location<'p> {
    path: &'p Path,
    line: usize,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.path.display(), self.line)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::Cli;

    fn merged(file: &str, argv: &[&str]) -> Result<Vec<String>, UserError> {
        let command = Cli::command();
        let subcommand = command.find_subcommand("watch").unwrap();
        let given = command
            .clone()
            .ignore_errors(true)
            .try_get_matches_from(argv)
            .unwrap();
        let (_, given) = given.subcommand().unwrap();
        arguments(subcommand, given, Path::new("rstwatch.toml"), file)
            .map(|args| args.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn file_options_become_arguments_unless_the_command_line_has_them() {
        let file =
            "iface = [\"eth0\", \"eth1\"]\nport = 443\nno-egress = true\nformat = \"json\"\n";
        let args = merged(file, &["rstwatch", "watch", "--format", "ecs"]).unwrap();
        assert_eq!(
            args,
            ["--iface=eth0", "--iface=eth1", "--no-egress", "--port=443"]
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = merged(
            "iface = \"eth0\"\n\nidle_timeout = \"3s\"\n",
            &["rstwatch", "watch"],
        )
        .unwrap_err();
        assert!(err.0.contains("line 3"), "{err}");
        assert!(err.0.contains("unknown key 'idle_timeout'"), "{err}");
    }

    #[test]
    fn a_bad_value_is_reported_at_its_line_by_the_option_parser() {
        let err = merged("\nidle-timeout = \"soon\"\n", &["rstwatch", "watch"]).unwrap_err();
        assert!(err.0.contains("line 2"), "{err}");
        assert!(err.0.contains("like 30s"), "{err}");
        let err = merged("no-egress = \"yes\"\n", &["rstwatch", "watch"]).unwrap_err();
        assert!(err.0.contains("true or false"), "{err}");
        let err = merged("format = [\"json\"]\n", &["rstwatch", "watch"]).unwrap_err();
        assert!(err.0.contains("not an array"), "{err}");
    }

    #[test]
    fn a_file_cannot_name_another_file() {
        let err = merged("config = \"other.toml\"\n", &["rstwatch", "watch"]).unwrap_err();
        assert!(err.0.contains("'config' cannot be set"), "{err}");
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
