//! Dynamic completion of object names: the hidden `ferrofab __complete --
//! WORDS...` that the shell scripts of `ferrofab completions` call with the
//! words typed so far (without the program name and the word being
//! completed). When the next word is an object name it prints the names of
//! that kind, one a line, from the controller, and exits 0; otherwise it
//! prints nothing and exits 1, and the script falls back to clap's static
//! completion (commands, flags, enum values).
//!
//! Which position takes a name is decided here, in Rust, from the same
//! words the parser sees, so the three shell scripts stay a few lines each.

use std::path::PathBuf;
use std::time::Duration;

use ferrofab_proto::v1;

use crate::client;
use crate::config;
use crate::resource::{name_of, Resource};

/// Most time a completion may take: a shell waiting on a dead controller
/// must come back. A named constant: a person pressing Tab waits about
/// this long before giving up.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The kind words the parser takes (singular, plural, short).
fn kind_of(word: &str) -> Option<v1::Kind> {
    Some(match word {
        "node" | "nodes" => v1::Kind::Node,
        "pool" | "pools" => v1::Kind::Pool,
        "volume" | "volumes" | "vol" => v1::Kind::Volume,
        "attachment" | "attachments" | "att" => v1::Kind::Attachment,
        "tenant" | "tenants" => v1::Kind::Tenant,
        _ => return None,
    })
}

/// Verbs whose first argument is an existing object's name.
const NAME_VERBS: &[&str] = &["get", "delete", "rm", "update", "resize", "extend", "move"];

/// Flags whose value is the name of an object of a kind.
fn flag_kind(flag: &str) -> Option<v1::Kind> {
    Some(match flag {
        "--volume" => v1::Kind::Volume,
        "--node" | "--to" | "--add-node" | "--remove-node" | "--allowed-node" => v1::Kind::Node,
        "--tenant" => v1::Kind::Tenant,
        "--pool" => v1::Kind::Pool,
        _ => return None,
    })
}

/// Global options that take a value (their value is not a positional).
const VALUE_OPTIONS: &[&str] = &["--config", "--endpoint", "-o", "--output"];

/// What the words before the cursor say: the kind whose names complete
/// the next word, and the `--config`/`--endpoint` given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub kind: Option<v1::Kind>,
    pub config: Option<PathBuf>,
    pub endpoint: Option<String>,
}

/// Reads the typed words (see the module docs).
pub fn slot(words: &[String]) -> Slot {
    let mut s = Slot::default();
    let mut positional: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        if VALUE_OPTIONS.contains(&w) {
            let value = words.get(i + 1).cloned();
            match w {
                "--config" => s.config = value.map(PathBuf::from),
                "--endpoint" => s.endpoint = value,
                _ => {}
            }
            i += 2;
            continue;
        }
        if let Some(v) = w.strip_prefix("--config=") {
            s.config = Some(v.into());
        } else if let Some(v) = w.strip_prefix("--endpoint=") {
            s.endpoint = Some(v.into());
        } else if !w.starts_with('-') {
            positional.push(w);
        }
        i += 1;
    }
    if let Some(k) = words.last().and_then(|w| flag_kind(w)) {
        s.kind = Some(k);
        return s;
    }
    s.kind = match positional.as_slice() {
        [kind, verb] if NAME_VERBS.contains(verb) => kind_of(kind),
        ["describe" | "events", kind] => kind_of(kind),
        _ => None,
    };
    s
}

async fn names<R: Resource>(admin: &mut client::Admin) -> Vec<String> {
    R::list(admin, "")
        .await
        .map(|items| items.iter().map(|o| name_of(o).to_owned()).collect())
        .unwrap_or_default()
}

/// Lists the names of `kind`; nothing on any error (a completion never
/// prints errors into the command line).
async fn list(s: &Slot, kind: v1::Kind) -> Vec<String> {
    let Ok(cfg) = config::load(s.config.as_deref(), s.endpoint.as_deref()) else {
        return Vec::new();
    };
    let fetch = async {
        let Ok(mut admin) = client::connect(&cfg).await else {
            return Vec::new();
        };
        match kind {
            v1::Kind::Node => names::<v1::Node>(&mut admin).await,
            v1::Kind::Pool => names::<v1::Pool>(&mut admin).await,
            v1::Kind::Volume => names::<v1::Volume>(&mut admin).await,
            v1::Kind::Attachment => names::<v1::Attachment>(&mut admin).await,
            v1::Kind::Tenant => names::<v1::Tenant>(&mut admin).await,
            v1::Kind::Unspecified => Vec::new(),
        }
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .unwrap_or_default()
}

/// Runs `__complete`: true when the next word is a name (names printed).
/// `--config`/`--endpoint` among the words win over the ones the hidden
/// command itself got (from `FERROFAB_CONFIG`, `FERROFAB_ENDPOINT`).
pub async fn run(words: &[String], ctx: &super::Ctx) -> bool {
    let mut s = slot(words);
    s.config = s.config.or_else(|| ctx.config.clone());
    s.endpoint = s.endpoint.or_else(|| ctx.endpoint.clone());
    let Some(kind) = s.kind else {
        return false;
    };
    let mut out = String::new();
    for n in list(&s, kind).await {
        out.push_str(&n);
        out.push('\n');
    }
    let _ = crate::output::print(&out);
    true
}

/// The shell code that calls `__complete` before clap's own completion,
/// appended to `ferrofab completions SHELL` (bash, zsh and fish; other
/// shells get the static completion only).
pub fn dynamic_script(shell: clap_complete::Shell) -> &'static str {
    match shell {
        clap_complete::Shell::Bash => BASH,
        clap_complete::Shell::Zsh => ZSH,
        clap_complete::Shell::Fish => FISH,
        _ => "",
    }
}

const BASH: &str = r#"
# Object names from the controller (ferrofab __complete), else the above.
_ferrofab_dynamic() {
    local out
    if out=$(ferrofab __complete -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null); then
        local IFS=$'\n'
        COMPREPLY=( $(compgen -W "$out" -- "${COMP_WORDS[COMP_CWORD]}") )
        return 0
    fi
    _ferrofab "$@"
}
complete -F _ferrofab_dynamic -o bashdefault -o default ferrofab
"#;

const ZSH: &str = r#"
# Object names from the controller (ferrofab __complete), else the above.
_ferrofab_dynamic() {
    local out
    if out=$(ferrofab __complete -- "${(@)words[2,CURRENT-1]}" 2>/dev/null); then
        local -a names
        names=(${(f)out})
        compadd -a names
        return 0
    fi
    _ferrofab "$@"
}
compdef _ferrofab_dynamic ferrofab
"#;

const FISH: &str = r#"
# Object names from the controller (ferrofab __complete).
function __ferrofab_names
    set -l words (commandline -opc)
    ferrofab __complete -- $words[2..-1] 2>/dev/null
end
complete -c ferrofab -f -n '__ferrofab_names >/dev/null' -a '(__ferrofab_names)'
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(words: &[&str]) -> Option<v1::Kind> {
        let w: Vec<String> = words.iter().map(|s| (*s).to_owned()).collect();
        slot(&w).kind
    }

    #[test]
    fn name_positions() {
        assert_eq!(kind(&["volume", "get"]), Some(v1::Kind::Volume));
        assert_eq!(kind(&["vol", "resize"]), Some(v1::Kind::Volume));
        assert_eq!(
            kind(&["-o", "json", "node", "delete"]),
            Some(v1::Kind::Node)
        );
        assert_eq!(kind(&["describe", "pool"]), Some(v1::Kind::Pool));
        assert_eq!(kind(&["events", "attachment"]), Some(v1::Kind::Attachment));
        assert_eq!(
            kind(&["attachment", "create", "a1", "--volume"]),
            Some(v1::Kind::Volume)
        );
        assert_eq!(kind(&["volume", "move", "v", "--to"]), Some(v1::Kind::Node));
        // Not a name: a new object's name, a verb, or past the name.
        assert_eq!(kind(&["volume", "create"]), None);
        assert_eq!(kind(&["volume"]), None);
        assert_eq!(kind(&["volume", "get", "v1"]), None);
        assert_eq!(kind(&["describe"]), None);
        let w: Vec<String> = ["--config", "/x.toml", "volume", "get"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let s = slot(&w);
        assert_eq!(s.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(s.kind, Some(v1::Kind::Volume));
    }
}
