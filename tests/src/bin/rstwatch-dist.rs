//! Writes rstwatch's man pages and shell completions under a package's root directory, where
//! Debian keeps them, generated from the command line rstwatch parses
//! (`rstwatch::cli::command`), so that they never disagree with `--help`. `cargo xtask dist`
//! runs it; it is a program of its own so that the shipped binary carries no generator.
//!
//! Usage: `rstwatch-dist ROOT DATE`, DATE (YYYY-MM-DD) being the man pages' date.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap_complete::Shell;
use clap_mangen::{
    roff::{bold, roman, Roff},
    Man,
};

const NAME: &str = "rstwatch";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, date] = &args[..] else {
        bail!("usage: rstwatch-dist ROOT DATE (the man pages' date, YYYY-MM-DD)");
    };
    let root = Path::new(root);
    man_pages(root, date)?;
    completions(root)
}

/// A page's manual section: 8 for what administers the host (loading eBPF programs into the
/// kernel, attaching to interfaces), 1 for what any user may run.
fn section(subcommand: Option<&str>) -> Result<&'static str> {
    Ok(match subcommand {
        None | Some("watch" | "detach") => "8",
        Some("explain") => "1",
        Some(other) => bail!(
            "the subcommand `{other}` has no man section yet: give it one in {}",
            file!()
        ),
    })
}

/// `rstwatch(8)` and one page per subcommand (`rstwatch-watch(8)`, ...), each listing the
/// others where they are.
fn man_pages(root: &Path, date: &str) -> Result<()> {
    // Built as `main` parses it, but without the `help` subcommand, which `-h` covers.
    let mut command = rstwatch::cli::command().disable_help_subcommand(true);
    command.build();
    let version = command.get_version().context("rstwatch has a version")?;
    let source = format!("{NAME} {version}");
    let main_section = section(None)?;

    let mut subcommands = Vec::new();
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if subcommand.has_subcommands() {
            bail!(
                "`{NAME} {}` has subcommands: give them pages",
                subcommand.get_name()
            );
        }
        let section = section(Some(subcommand.get_name()))?;
        let page = format!("{NAME}-{}", subcommand.get_name());
        let about = subcommand.get_about().map(ToString::to_string);
        subcommands.push((subcommand.clone(), page, section, about));
    }

    let man = Man::new(command.clone())
        .section(main_section)
        .date(date)
        .source(&source);
    let mut text = Vec::new();
    render_common(&man, &command, &mut text)?;
    let mut roff = Roff::new();
    roff.control("SH", ["SUBCOMMANDS"]);
    for (_, page, section, about) in &subcommands {
        roff.control("TP", []);
        roff.text([bold(page.as_str()), roman(format!("({section})"))]);
        roff.text([roman(about.as_deref().unwrap_or_default())]);
    }
    roff.control("SH", ["EXAMPLES"]);
    // Unfilled, one per line: a command line is copied, not read as prose.
    roff.control("EX", []);
    for example in rstwatch::cli::EXAMPLES {
        roff.text([roman(*example)]);
    }
    roff.control("EE", []);
    roff.to_writer(&mut text)?;
    man.render_version_section(&mut text)?;
    write(&root.join(page_path(NAME, main_section)), &text)?;

    for (subcommand, page, section, _) in &subcommands {
        let man = Man::new(subcommand.clone())
            .section(*section)
            .date(date)
            .source(&source);
        let mut text = Vec::new();
        render_common(&man, subcommand, &mut text)?;
        let mut roff = Roff::new();
        roff.control("SH", ["SEE ALSO"]);
        let mut see_also = vec![bold(NAME), roman(format!("({main_section})"))];
        for (_, other, other_section, _) in subcommands.iter().filter(|(_, p, ..)| p != page) {
            see_also.push(roman(", "));
            see_also.push(bold(other.as_str()));
            see_also.push(roman(format!("({other_section})")));
        }
        roff.text(see_also);
        roff.to_writer(&mut text)?;
        write(&root.join(page_path(page, section)), &text)?;
    }
    Ok(())
}

/// The sections every page has: title, name, synopsis, description, options.
fn render_common(man: &Man, command: &clap::Command, text: &mut Vec<u8>) -> Result<()> {
    man.render_title(text)?;
    man.render_name_section(text)?;
    man.render_synopsis_section(text)?;
    man.render_description_section(text)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(text)?;
    }
    Ok(())
}

fn page_path(page: &str, section: &str) -> String {
    format!("usr/share/man/man{section}/{page}.{section}")
}

/// Completions for bash, zsh and fish, where each shell's loader finds them by the command's
/// name.
fn completions(root: &Path) -> Result<()> {
    for (shell, path) in [
        (
            Shell::Bash,
            "usr/share/bash-completion/completions/rstwatch",
        ),
        (Shell::Zsh, "usr/share/zsh/vendor-completions/_rstwatch"),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d/rstwatch.fish",
        ),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut rstwatch::cli::command(), NAME, &mut script);
        write(&root.join(path), &script)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
