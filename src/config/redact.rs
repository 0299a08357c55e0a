//! Secrets kept out of what vigil prints or serves: tokens, webhook URLs (their path and
//! query often carry a key), webhook secrets and header values. A URL is shown as its scheme
//! and host (and port) only.

use crate::config::Config;

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// `scheme://host[:port]` of a URL, or [`REDACTED`] when it cannot be read as one.
pub fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            (None, _) => REDACTED.into(),
        },
        Err(_) => REDACTED.into(),
    }
}

impl Config {
    /// The configuration as `vigil config check` prints it: every token, webhook secret and
    /// header value replaced by [`REDACTED`], webhook URLs cut to their origin.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for tokens in [
            &mut c.auth.agent_tokens,
            &mut c.auth.monitor_tokens,
            &mut c.auth.admin_tokens,
        ] {
            tokens.iter_mut().for_each(|t| *t = REDACTED.into());
        }
        for s in &mut c.sinks {
            if let Some(url) = &mut s.url {
                *url = url_origin(url);
            }
            if let Some(secret) = &mut s.secret {
                *secret = REDACTED.into();
            }
            s.headers.values_mut().for_each(|v| *v = REDACTED.into());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_only_its_scheme_and_host() {
        assert_eq!(
            url_origin("https://hooks.example.com/services/T000/B000/XXXX?key=abc"),
            "https://hooks.example.com"
        );
        assert_eq!(
            url_origin("http://user:pw@127.0.0.1:8080/k"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(url_origin("not a url /secret"), REDACTED);
    }

    #[test]
    fn the_printed_configuration_holds_no_secret() {
        let text = "[auth]\nagent_tokens = [\"agent-s3cret\"]\nmonitor_tokens = [\"mon-s3cret\"]\n\
                    admin_tokens = [\"adm-s3cret\"]\n\
                    [[sinks]]\nname = \"w\"\ntype = \"webhook\"\n\
                    url = \"https://hooks.example.com/path-s3cret?k=q-s3cret\"\n\
                    secret = \"hmac-s3cret\"\nheaders = { Authorization = \"Bearer hdr-s3cret\" }\n";
        let table: toml::Table = text.parse().unwrap();
        let c: Config = toml::Value::Table(table).try_into().unwrap();
        assert!(
            format!("{c:#?}").contains("s3cret"),
            "the control holds them"
        );
        let shown = format!("{:#?}", c.redacted());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert_eq!(
            c.redacted().auth.admin_tokens.len(),
            1,
            "how many stays visible"
        );
    }
}
