//! `courier user add | list | remove`: edits a users file offline (the
//! broker rereads it on SIGHUP). `add` makes a new random token, prints it
//! once, and stores only its SHA-256; adding a user that exists replaces
//! its grants and its token (the old token stops working at the next
//! reload). The file format is described in `courier::auth::file`.

use super::cli::{self, Failure};
use courier::auth::{self, Grant, GrantKind, Pattern, User, Users};
use std::path::{Path, PathBuf};

pub enum UserCommand {
    Add { name: String, grants: Vec<Grant> },
    List,
    Remove { name: String },
}

/// The grant flags given to `add`, in the order of the kinds.
pub struct GrantFlags {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub admin: Vec<String>,
}

impl GrantFlags {
    pub fn any(&self) -> bool {
        !(self.publish.is_empty() && self.subscribe.is_empty() && self.admin.is_empty())
    }

    fn grants(&self) -> Result<Vec<Grant>, Failure> {
        let mut grants = Vec::new();
        let kinds = [
            (GrantKind::Publish, &self.publish),
            (GrantKind::Subscribe, &self.subscribe),
            (GrantKind::Admin, &self.admin),
        ];
        for (kind, patterns) in kinds {
            for text in patterns {
                let pattern = Pattern::parse(text)
                    .map_err(|e| Failure::usage(format!("--{} '{text}': {e}", kind.name())))?;
                grants.push(Grant { kind, pattern });
            }
        }
        grants.sort();
        grants.dedup();
        Ok(grants)
    }
}

/// Parses `user SUBCOMMAND ...` from the free arguments after `user`.
pub fn parse(
    mut free: impl Iterator<Item = String>,
    flags: &GrantFlags,
) -> Result<UserCommand, Failure> {
    let command = match free.next().as_deref() {
        Some("add") => {
            let name = user_name(free.next())?;
            UserCommand::Add {
                name,
                grants: flags.grants()?,
            }
        }
        Some("list") => UserCommand::List,
        Some("remove") => UserCommand::Remove {
            name: user_name(free.next())?,
        },
        Some(other) => {
            return Err(Failure::usage(format!("unknown user command '{other}'")));
        }
        None => return Err(Failure::usage("user: give add NAME, list or remove NAME")),
    };
    if flags.any() && !matches!(command, UserCommand::Add { .. }) {
        return Err(Failure::usage(
            "--publish, --subscribe and --admin go with 'user add'",
        ));
    }
    if let Some(extra) = free.next() {
        return Err(Failure::usage(format!("unexpected argument '{extra}'")));
    }
    Ok(command)
}

fn user_name(name: Option<String>) -> Result<String, Failure> {
    match name {
        Some(name) if auth::valid_user_name(&name) => Ok(name),
        Some(name) => Err(Failure::usage(format!(
            "invalid user name '{name}': use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        ))),
        None => Err(Failure::usage("give the user's NAME")),
    }
}

fn read(path: &Path, missing_ok: bool) -> Result<Users, Failure> {
    match auth::load(path) {
        Ok(users) => Ok(users),
        Err(auth::UsersFileError::Io(e))
            if missing_ok && e.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(Users::default())
        }
        Err(e) => Err(Failure::runtime(format!("{}: {e}", path.display()))),
    }
}

fn write(path: &Path, users: &Users) -> Result<(), Failure> {
    auth::save(path, users)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
}

/// Runs a user command on the file at `path`.
pub fn run(command: UserCommand, path: Option<PathBuf>) -> Result<(), Failure> {
    let Some(path) = path else {
        return Err(Failure::usage("user commands need --users FILE"));
    };
    match command {
        UserCommand::Add { name, grants } => {
            let mut users = read(&path, true)?;
            let token = auth::new_token()
                .map_err(|e| Failure::runtime(format!("no randomness for a token: {e}")))?;
            let replaced = users.get(&name).is_some();
            users.insert(User {
                name: name.clone(),
                token_hash: auth::hash_token(&token),
                grants,
            });
            write(&path, &users)?;
            let verb = if replaced { "replaced" } else { "added" };
            cli::note(format_args!(
                "user {name} {verb} in {}; its token is printed once, below \
                 (send SIGHUP to a running broker to apply)",
                path.display()
            ));
            cli::print_line(token)
        }
        UserCommand::List => {
            let users = read(&path, false)?;
            for user in users.iter() {
                let grants: Vec<String> = user.grants.iter().map(Grant::to_string).collect();
                let grants = if grants.is_empty() {
                    "(no grants)".to_owned()
                } else {
                    grants.join(" ")
                };
                cli::print_line(format_args!("{}  {grants}", user.name))?;
            }
            Ok(())
        }
        UserCommand::Remove { name } => {
            let mut users = read(&path, false)?;
            if users.remove(&name).is_none() {
                return Err(Failure::runtime(format!(
                    "no user '{name}' in {}",
                    path.display()
                )));
            }
            write(&path, &users)?;
            cli::note(format_args!(
                "user {name} removed from {} (send SIGHUP to a running broker to apply)",
                path.display()
            ));
            Ok(())
        }
    }
}
