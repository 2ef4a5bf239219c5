//! `set FN …`: a function's routing settings (hosts, prefix, stripping, affinity, pinning).

use switchyard_core::plan::{self, Settings};
use switchyard_core::Affinity;

use crate::args;
use crate::exit::{self, fail, Code};
use crate::store::Store;
use crate::write::{run, Next};

/// Reads `header:NAME`, `cookie:NAME` or `none`.
pub fn parse_affinity(word: &str) -> anyhow::Result<Option<Affinity>> {
    let bad = || {
        fail(
            Code::Invalid,
            format!("--affinity {word:?}: expected header:NAME, cookie:NAME or none"),
        )
    };
    if word == "none" {
        return Ok(None);
    }
    let (kind, name) = word.split_once(':').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    match kind {
        "header" => Ok(Some(Affinity {
            header: Some(name.to_string()),
            cookie: None,
        })),
        "cookie" => Ok(Some(Affinity {
            header: None,
            cookie: Some(name.to_string()),
        })),
        _ => Err(bad()),
    }
}

/// The settings the flags ask for (read before anything is read from the store).
pub fn settings(args: &args::Set) -> anyhow::Result<Settings> {
    Ok(Settings {
        hosts: if args.no_hosts {
            Some(Vec::new())
        } else if args.hosts.is_empty() {
            None
        } else {
            Some(args.hosts.clone())
        },
        path_prefix: if args.default_prefix {
            Some(None)
        } else {
            args.prefix.clone().map(Some)
        },
        strip_prefix: args.strip_prefix.map(args::Switch::on),
        affinity: args.affinity.as_deref().map(parse_affinity).transpose()?,
        pinning: args.pinning.map(args::Switch::on),
    })
}

/// `set FN …`.
pub async fn set(store: &dyn Store, args: args::Set, settings: Settings) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let name = &input.function.name;
        match plan::settings(
            name,
            &input.function.spec,
            &settings,
            &input.states(),
            input.change,
        )
        .map_err(exit::plan)?
        {
            Some(spec) => Ok(Next::from(spec)),
            None => Ok(Next::Unchanged(format!(
                "{name}: the settings are already so; nothing to change"
            ))),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_words_are_a_header_a_cookie_or_none() {
        assert_eq!(
            parse_affinity("header:x-user").unwrap(),
            Some(Affinity {
                header: Some("x-user".into()),
                cookie: None
            })
        );
        assert_eq!(
            parse_affinity("cookie:sid")
                .unwrap()
                .unwrap()
                .cookie
                .as_deref(),
            Some("sid")
        );
        assert_eq!(parse_affinity("none").unwrap(), None);
        for bad in ["header:", "header", "ip:1", ""] {
            assert!(parse_affinity(bad).is_err(), "{bad}");
        }
    }
}
