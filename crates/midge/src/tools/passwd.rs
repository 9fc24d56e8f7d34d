//! `midge passwd`: creates and edits password files in Mosquitto's format, with the flags,
//! messages and exit codes of `mosquitto_passwd` 2.0, so scripts written for it keep working.
//!
//! Differences, each on purpose: new entries are argon2id unless `-H sha512-pbkdf2` (or
//! `-H sha512`) asks for a format Mosquitto reads; comment and blank lines survive edits
//! (`mosquitto_passwd` calls such a file corrupt); `-U` leaves entries that are already hashed
//! alone instead of hashing the hash; a password piped on stdin may be one line (a second line,
//! if present, must repeat it); new files are created readable by their owner only.
//!
//! The file is rewritten in place (not renamed over), so a bind-mounted file keeps working; a
//! backup is kept beside it until the new content is written.

use midge_broker::auth::password::{HashKind, PasswordHash, MOSQUITTO_DEFAULT_ITERATIONS};
use midge_broker::auth::scram::{ScramFile, DEFAULT_ITERATIONS as SCRAM_DEFAULT_ITERATIONS};
use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Entry point: `args` starts with the subcommand's own name (`passwd`), as `argv` does.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let stdin = io::stdin();
    let mut input = if stdin.is_terminal() {
        PasswordInput::Terminal
    } else {
        PasswordInput::Lines(Box::new(stdin.lock()))
    };
    let code = run(&args, &mut input, &mut io::stdout(), &mut io::stderr());
    ExitCode::from(code)
}

/// Where interactive passwords come from.
pub enum PasswordInput<'a> {
    /// Prompt on the terminal without echo.
    Terminal,
    /// Read lines (stdin that is not a terminal, or a test's input).
    Lines(Box<dyn BufRead + 'a>),
}

/// Runs `midge passwd` with explicit input and output; returns the exit code.
pub fn run(
    args: &[OsString],
    input: &mut PasswordInput<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match run_inner(args, input, out) {
        Ok(()) => 0,
        Err(Failure { message, code }) => {
            if !message.is_empty() {
                let _ = writeln!(err, "{message}");
            }
            code
        }
    }
}

/// An error message for stderr and the exit code that goes with it.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

const USAGE: &str = "\
midge passwd is a tool for managing password files for Midge and Mosquitto.

Usage: midge passwd [-H argon2id | -H sha512-pbkdf2 | -H sha512 | -H scram-sha-256] [-c | -D] passwordfile username
       midge passwd [-H argon2id | -H sha512-pbkdf2 | -H sha512 | -H scram-sha-256] [-c] -b passwordfile username password
       midge passwd [-H argon2id | -H sha512-pbkdf2 | -H sha512 | -H scram-sha-256] -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to argon2id, which only Midge reads.
      Use sha512-pbkdf2 (mosquitto_passwd's default) for a file Mosquitto reads too;
      sha512 is the weaker format of Mosquitto 1.6 and earlier.
      scram-sha-256 writes a SCRAM credentials file (the broker's `scram_file`) for
      MQTT 5 enhanced authentication instead of a password file.
 -I : number of PBKDF2 iterations for sha512-pbkdf2 (default 101, as mosquitto_passwd)
      or scram-sha-256 (default and minimum 4096, RFC 7677).
 -U : update a plain text password file to use hashed passwords.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Create {
        file: PathBuf,
        username: String,
        password: Option<String>,
    },
    Update {
        file: PathBuf,
        username: String,
        password: Option<String>,
    },
    Delete {
        file: PathBuf,
        username: String,
    },
    Upgrade {
        file: PathBuf,
    },
    Help,
}

/// What a new entry is: a password hash for a `password_file`, or SCRAM keys for a
/// `scram_file` (the two files share the `username:value` line shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Password(HashKind),
    Scram,
}

#[derive(Debug, PartialEq, Eq)]
struct Options {
    kind: Kind,
    iterations: u32,
    action: Action,
}

fn run_inner(
    args: &[OsString],
    input: &mut PasswordInput<'_>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let options = match parse_args(args.get(1..).unwrap_or_default())? {
        Some(options) => options,
        None => {
            // mosquitto_passwd prints its usage to stdout and fails on a wrong argument count.
            let _ = out.write_all(USAGE.as_bytes());
            return Err(fail(""));
        }
    };
    let hasher = Hasher {
        kind: options.kind,
        iterations: options.iterations,
    };
    match options.action {
        Action::Help => {
            let _ = out.write_all(USAGE.as_bytes());
            Ok(())
        }
        Action::Create {
            file,
            username,
            password,
        } => {
            let password = match password {
                Some(p) => p,
                None => read_new_password(input, out)?,
            };
            let line = hasher.line(&username, &password)?;
            create_file(&file, &line)
        }
        Action::Update {
            file,
            username,
            password,
        } => {
            let content = read_existing(&file)?;
            let password = match password {
                Some(p) => p,
                None => read_new_password(input, out)?,
            };
            let updated = set_user(&content, &username, &hasher.line(&username, &password)?)?;
            rewrite_file(&file, &content, &updated)
        }
        Action::Delete { file, username } => {
            let content = read_existing(&file)?;
            let updated = delete_user(&content, &username)?;
            rewrite_file(&file, &content, &updated)
        }
        Action::Upgrade { file } => {
            let content = read_existing(&file)?;
            let updated = upgrade(&content, &hasher)?;
            rewrite_file(&file, &content, &updated)
        }
    }
}

/// Parses flags and operands as `mosquitto_passwd` does: flags first, then operands, whose
/// count depends on the flags. `Ok(None)` means "print usage and fail".
fn parse_args(args: &[OsString]) -> Result<Option<Options>, Failure> {
    let mut kind = Kind::Password(HashKind::Argon2id);
    let mut iterations = None;
    let (mut batch, mut create, mut delete, mut upgrade) = (false, false, false, false);
    let mut idx = 0;
    while let Some(arg) = args.get(idx) {
        match arg.to_str() {
            Some("-H") => {
                let Some(name) = args.get(idx + 1) else {
                    return Err(fail(
                        "Error: -H argument given but not enough other arguments.",
                    ));
                };
                let name = name.to_string_lossy();
                kind = if name.eq_ignore_ascii_case("scram-sha-256") {
                    Kind::Scram
                } else {
                    HashKind::from_name(&name)
                        .map(Kind::Password)
                        .ok_or_else(|| fail(format!("Error: Unknown hash type '{name}'")))?
                };
                idx += 1;
            }
            Some("-I") => {
                let Some(count) = args.get(idx + 1) else {
                    return Err(fail(
                        "Error: -I argument given but not enough other arguments.",
                    ));
                };
                iterations = Some(
                    count
                        .to_str()
                        .and_then(|c| c.parse::<u32>().ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| fail("Error: Number of iterations must be > 0."))?,
                );
                idx += 1;
            }
            Some("-b") => batch = true,
            Some("-c") => create = true,
            Some("-D") => delete = true,
            Some("-U") => upgrade = true,
            Some("-h" | "--help") => {
                return Ok(Some(Options {
                    kind,
                    iterations: 1,
                    action: Action::Help,
                }))
            }
            _ => break,
        }
        idx += 1;
    }
    for (a, b, names) in [
        (create, delete, "-c and -D"),
        (create, upgrade, "-c and -U"),
        (delete, upgrade, "-D and -U"),
        (delete, batch, "-b and -D"),
    ] {
        if a && b {
            return Err(fail(format!("Error: {names} cannot be used together.")));
        }
    }
    let operands = &args[idx..];
    let file = |i: usize| PathBuf::from(&operands[i]);
    let text = |i: usize| -> Result<String, Failure> {
        operands[i]
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| fail("Error: Username and password must be valid UTF-8."))
    };
    let action = if create {
        let needed = if batch { 3 } else { 2 };
        if operands.len() < needed {
            return Err(fail(if batch {
                "Error: -c argument given but password file, username, or password missing."
            } else {
                "Error: -c argument given but password file or username missing."
            }));
        }
        Action::Create {
            file: file(0),
            username: text(1)?,
            password: if batch { Some(text(2)?) } else { None },
        }
    } else if delete {
        if operands.len() < 2 {
            return Err(fail(
                "Error: -D argument given but password file or username missing.",
            ));
        }
        Action::Delete {
            file: file(0),
            username: text(1)?,
        }
    } else if upgrade {
        if operands.len() != 1 {
            return Err(fail("Error: -U argument given but password file missing."));
        }
        Action::Upgrade { file: file(0) }
    } else if batch && operands.len() == 3 {
        Action::Update {
            file: file(0),
            username: text(1)?,
            password: Some(text(2)?),
        }
    } else if !batch && operands.len() == 2 {
        Action::Update {
            file: file(0),
            username: text(1)?,
            password: None,
        }
    } else {
        return Ok(None);
    };
    match &action {
        Action::Create {
            username, password, ..
        }
        | Action::Update {
            username, password, ..
        } => {
            check_username(username)?;
            check_password_length(password.as_deref())?;
        }
        Action::Delete { username, .. } => check_username(username)?,
        Action::Upgrade { .. } | Action::Help => {}
    }
    let iterations = match (kind, iterations) {
        (Kind::Scram, Some(n)) if n < SCRAM_DEFAULT_ITERATIONS => {
            return Err(fail(format!(
            "Error: SCRAM-SHA-256 needs at least {SCRAM_DEFAULT_ITERATIONS} iterations (RFC 7677)."
        )))
        }
        (_, Some(n)) => n,
        (Kind::Scram, None) => SCRAM_DEFAULT_ITERATIONS,
        (Kind::Password(_), None) => MOSQUITTO_DEFAULT_ITERATIONS,
    };
    Ok(Some(Options {
        kind,
        iterations,
        action,
    }))
}

fn check_username(username: &str) -> Result<(), Failure> {
    if username.len() > 65535 {
        return Err(fail(
            "Error: Username must be less than 65536 characters long.",
        ));
    }
    if username.chars().any(char::is_control) {
        return Err(fail("Error: Username must not contain control characters."));
    }
    if username.contains(':') {
        return Err(fail("Error: Username must not contain the ':' character."));
    }
    Ok(())
}

fn check_password_length(password: Option<&str>) -> Result<(), Failure> {
    match password {
        Some(p) if p.len() > 65535 => Err(fail(
            "Error: Password must be less than 65536 characters long.",
        )),
        _ => Ok(()),
    }
}

/// Asks for the password twice, as `mosquitto_passwd` does (exit code 2 on a mismatch).
fn read_new_password(
    input: &mut PasswordInput<'_>,
    out: &mut dyn Write,
) -> Result<String, Failure> {
    let unreadable = |e: io::Error| fail(format!("Error: Unable to read password. {e}."));
    let (first, second) = match input {
        PasswordInput::Terminal => {
            let first = rpassword::prompt_password("Password: ").map_err(unreadable)?;
            if first.is_empty() {
                return Err(fail("Error: Empty password."));
            }
            let second = rpassword::prompt_password("Reenter password: ").map_err(unreadable)?;
            (first, Some(second))
        }
        PasswordInput::Lines(reader) => {
            let _ = out.flush();
            let first = read_line(reader.as_mut()).map_err(unreadable)?;
            let second = read_line(reader.as_mut()).map_err(unreadable)?;
            (first.unwrap_or_default(), second)
        }
    };
    if first.is_empty() {
        return Err(fail("Error: Empty password."));
    }
    if second.is_some_and(|second| second != first) {
        return Err(Failure {
            message: "Error: Passwords do not match.".into(),
            code: 2,
        });
    }
    check_password_length(Some(&first))?;
    Ok(first)
}

/// One line without its line ending; `None` at end of input.
fn read_line(reader: &mut dyn BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(Some(line))
}

/// Makes `username:hash` lines.
struct Hasher {
    kind: Kind,
    iterations: u32,
}

impl Hasher {
    fn line(&self, username: &str, password: &str) -> Result<String, Failure> {
        match self.kind {
            Kind::Password(kind) => {
                let hash = PasswordHash::generate(kind, password.as_bytes(), self.iterations)
                    .map_err(|_| fail("Error: Unable to hash password."))?;
                Ok(format!("{username}:{hash}\n"))
            }
            Kind::Scram => ScramFile::entry(username, password, self.iterations)
                .map(|line| line + "\n")
                .map_err(|e| fail(format!("Error: {e}."))),
        }
    }

    /// Whether a `-U` upgrade leaves this value alone (it is already what `kind` writes).
    fn is_hashed(&self, value: &str) -> bool {
        match self.kind {
            Kind::Password(_) => PasswordHash::parse(value).is_ok(),
            Kind::Scram => value.starts_with("SCRAM-SHA-256$"),
        }
    }
}

/// A line of a password file, split into what editing needs.
enum Line<'a> {
    /// Comment or blank line, kept as it is.
    Other(&'a str),
    Entry {
        raw: &'a str,
        username: &'a str,
        value: &'a str,
    },
}

/// Splits a file into lines (each keeping its line ending); a line that is neither a comment,
/// blank, nor `username:value` is an error with its number, as `mosquitto_passwd` reports it.
fn parse_lines(content: &str) -> Result<Vec<Line<'_>>, Failure> {
    content
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                return Ok(Line::Other(raw));
            }
            match text.split_once(':') {
                Some((username, value))
                    if !username.trim().is_empty() && !value.trim().is_empty() =>
                {
                    Ok(Line::Entry {
                        raw,
                        username: username.trim(),
                        value: value.trim(),
                    })
                }
                _ => Err(fail(format!(
                    "Error: Corrupt password file at line {}.",
                    i + 1
                ))),
            }
        })
        .collect()
}

/// Replaces `username`'s line with `new_line`, or appends it.
fn set_user(content: &str, username: &str, new_line: &str) -> Result<String, Failure> {
    let mut updated = String::with_capacity(content.len() + new_line.len());
    let mut found = false;
    for line in parse_lines(content)? {
        match line {
            Line::Entry { username: u, .. } if u == username => {
                if !found {
                    updated.push_str(new_line);
                }
                found = true;
            }
            Line::Entry { raw, .. } | Line::Other(raw) => push_line(&mut updated, raw),
        }
    }
    if !found {
        updated.push_str(new_line);
    }
    Ok(updated)
}

fn delete_user(content: &str, username: &str) -> Result<String, Failure> {
    let mut updated = String::with_capacity(content.len());
    let mut found = false;
    for line in parse_lines(content)? {
        match line {
            Line::Entry { username: u, .. } if u == username => found = true,
            Line::Entry { raw, .. } | Line::Other(raw) => push_line(&mut updated, raw),
        }
    }
    if !found {
        return Err(fail(format!(
            "Warning: User {username} not found in password file."
        )));
    }
    Ok(updated)
}

/// Hashes every entry whose value is not already a hash.
fn upgrade(content: &str, hasher: &Hasher) -> Result<String, Failure> {
    let mut updated = String::with_capacity(content.len() * 2);
    for line in parse_lines(content)? {
        match line {
            Line::Entry {
                username, value, ..
            } if !hasher.is_hashed(value) => {
                updated.push_str(&hasher.line(username, value)?);
            }
            Line::Entry { raw, .. } | Line::Other(raw) => push_line(&mut updated, raw),
        }
    }
    Ok(updated)
}

/// Appends a kept line, adding the newline a last line may lack.
fn push_line(out: &mut String, raw: &str) {
    out.push_str(raw);
    if !raw.ends_with('\n') {
        out.push('\n');
    }
}

fn read_existing(file: &Path) -> Result<String, Failure> {
    let bytes = std::fs::read(file).map_err(|e| {
        fail(format!(
            "Error: Unable to open password file {}. {}.",
            file.display(),
            io_reason(&e)
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        fail(format!(
            "Error: Password file {} is not valid UTF-8.",
            file.display()
        ))
    })
}

/// `-c`: creates or truncates the file; a new file is readable by its owner only.
fn create_file(file: &Path, content: &str) -> Result<(), Failure> {
    let open_error = |e: io::Error| {
        fail(format!(
            "Error: Unable to open file {} for writing. {}.",
            file.display(),
            io_reason(&e)
        ))
    };
    let mut handle = owner_only_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
        .map_err(open_error)?;
    handle.write_all(content.as_bytes()).map_err(open_error)
}

/// Writes `updated` over `file` in place, keeping a backup of `old` until that succeeded.
fn rewrite_file(file: &Path, old: &str, updated: &str) -> Result<(), Failure> {
    let backup = backup_path(file);
    let backup_error = || {
        fail(format!(
            "Error creating backup password file \"{}\", not continuing.",
            backup.display()
        ))
    };
    let mut handle = owner_only_options()
        .write(true)
        .create_new(true)
        .open(&backup)
        .map_err(|_| backup_error())?;
    if handle.write_all(old.as_bytes()).is_err() || handle.sync_all().is_err() {
        let _ = std::fs::remove_file(&backup);
        return Err(backup_error());
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .and_then(|mut f| {
            f.write_all(updated.as_bytes())?;
            f.sync_all()
        });
    match written {
        Ok(()) => {
            // The backup may hold old passwords: do not leave it around.
            let _ = std::fs::remove_file(&backup);
            Ok(())
        }
        Err(_) => Err(fail(format!(
            "Error occurred updating password file.\nPassword file may be corrupt, check the backup file: {}.",
            backup.display()
        ))),
    }
}

/// `<file>.backup.<unique>` beside the file, as `mosquitto_passwd` names it; opened with
/// `create_new`, so an existing file is never overwritten.
fn backup_path(file: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".backup.{}{nanos:09}", std::process::id()));
    PathBuf::from(name)
}

fn owner_only_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// The OS's reason without Rust's " (os error N)" suffix, like C's `strerror`.
fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_then_operands_as_mosquitto_passwd() {
        let o = parse_args(&args(&["-H", "sha512-pbkdf2", "-c", "-b", "f", "u", "p"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.kind, Kind::Password(HashKind::Sha512Pbkdf2));
        assert_eq!(
            o.action,
            Action::Create {
                file: "f".into(),
                username: "u".into(),
                password: Some("p".into())
            }
        );
        // A flag after the operands is an operand, so the count is wrong: usage.
        assert!(parse_args(&args(&["f", "u", "-b"])).unwrap().is_none());
    }

    #[test]
    fn scram_kind_defaults_to_4096_iterations_and_refuses_fewer() {
        let o = parse_args(&args(&["-H", "scram-sha-256", "-b", "f", "u", "p"]))
            .unwrap()
            .unwrap();
        assert_eq!((o.kind, o.iterations), (Kind::Scram, 4096));
        let low = parse_args(&args(&[
            "-H",
            "scram-sha-256",
            "-I",
            "1000",
            "-b",
            "f",
            "u",
            "p",
        ]));
        assert!(low.unwrap_err().message.contains("4096"));
        let o = parse_args(&args(&["-b", "f", "u", "p"])).unwrap().unwrap();
        assert_eq!(o.iterations, MOSQUITTO_DEFAULT_ITERATIONS);
    }

    #[test]
    fn set_user_replaces_in_place_and_keeps_other_lines() {
        let content = "# admins\nroot:$6$x$y\n\nbob:$7$1$a$b";
        let updated = set_user(content, "root", "root:NEW\n").unwrap();
        assert_eq!(updated, "# admins\nroot:NEW\n\nbob:$7$1$a$b\n");
        let appended = set_user(content, "carol", "carol:NEW\n").unwrap();
        assert!(appended.ends_with("bob:$7$1$a$b\ncarol:NEW\n"));
    }

    #[test]
    fn corrupt_line_is_reported_with_its_number() {
        let err = set_user("a:b\nnocolon\n", "a", "a:c\n").unwrap_err();
        assert_eq!(err.message, "Error: Corrupt password file at line 2.");
    }

    #[test]
    fn password_from_lines_needs_matching_repeat() {
        let mut out = Vec::new();
        let mut one = PasswordInput::Lines(Box::new(&b"secret\n"[..]));
        assert_eq!(read_new_password(&mut one, &mut out).unwrap(), "secret");
        let mut two = PasswordInput::Lines(Box::new(&b"secret\r\nsecret\r\n"[..]));
        assert_eq!(read_new_password(&mut two, &mut out).unwrap(), "secret");
        let mut bad = PasswordInput::Lines(Box::new(&b"secret\nother\n"[..]));
        assert_eq!(read_new_password(&mut bad, &mut out).unwrap_err().code, 2);
        let mut empty = PasswordInput::Lines(Box::new(&b""[..]));
        let err = read_new_password(&mut empty, &mut out).unwrap_err();
        assert_eq!(err.message, "Error: Empty password.");
    }

    #[test]
    fn io_reason_reads_like_strerror() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
