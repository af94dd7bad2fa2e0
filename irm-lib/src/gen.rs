//! Manual pages and shell completions generated from a program's clap
//! definition (clap_mangen, clap_complete), written under a `share`
//! directory in the places Debian looks: `man/manN/`, `bash-completion/
//! completions/`, `zsh/vendor-completions/`, `fish/vendor_completions.d/`.
//! Used by every program's `--generate DIR` (and `irm generate DIR`) through
//! the `gen` feature of this crate; scripts/install.sh and the Debian package
//! call them.

use clap_complete::Shell;
use std::io;
use std::path::Path;

/// Write the man page of `cmd` (and one per subcommand, `name-sub.N`) in
/// section `section`, and its bash, zsh and fish completions.
pub fn generate(cmd: clap::Command, section: &str, share: &Path) -> io::Result<()> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mandir = share.join("man").join(format!("man{section}"));
    std::fs::create_dir_all(&mandir)?;
    write_pages(&cmd, &name, section, &mandir)?;
    for (shell, dir, file) in [
        (Shell::Bash, "bash-completion/completions", name.clone()),
        (Shell::Zsh, "zsh/vendor-completions", format!("_{name}")),
        (
            Shell::Fish,
            "fish/vendor_completions.d",
            format!("{name}.fish"),
        ),
    ] {
        let dir = share.join(dir);
        std::fs::create_dir_all(&dir)?;
        let mut out = std::fs::File::create(dir.join(file))?;
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    }
    Ok(())
}

fn write_pages(cmd: &clap::Command, title: &str, section: &str, dir: &Path) -> io::Result<()> {
    let mut out = std::fs::File::create(dir.join(format!("{title}.{section}")))?;
    clap_mangen::Man::new(cmd.clone())
        .title(title.to_uppercase())
        .section(section)
        .source(format!("ethflow {}", env!("CARGO_PKG_VERSION")))
        .manual("ethflow")
        .render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{title}-{}", sub.get_name()), section, dir)?;
    }
    Ok(())
}
