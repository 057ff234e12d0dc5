//! The email templates, compiled into the binary from `email_templates/` so no template
//! files are needed at run time. HTML parts escape what they interpolate; subjects and text
//! parts are rendered verbatim by a second Handlebars instance without an escape function.

use anyhow::Context;
use handlebars::Handlebars;
use serde_json::Value;

/// The emails Parley sends; each is `email_templates/<as_str()>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateName {
    VerifyEmail,
    PasswordReset,
    PasswordChanged,
}

impl TemplateName {
    /// Every template, for start-up checks and tests.
    pub const ALL: [TemplateName; 3] = [TemplateName::VerifyEmail, TemplateName::PasswordReset, TemplateName::PasswordChanged];

    /// The template's directory name under `email_templates/`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateName::VerifyEmail => "verify_email",
            TemplateName::PasswordReset => "password_reset",
            TemplateName::PasswordChanged => "password_changed",
        }
    }
}

impl std::fmt::Display for TemplateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email ready to send: one subject line and the two alternative bodies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `(partial name, source)` of the shared layouts; bodies extend them with
/// `{{#> layouts/base.html}}{{#*inline "body"}}...{{/inline}}{{/layouts/base.html}}`.
const LAYOUTS: [(&str, &str); 2] = [
    ("layouts/base.html", include_str!("../../../email_templates/layouts/base.html.hbs")),
    ("layouts/base.txt", include_str!("../../../email_templates/layouts/base.txt.hbs")),
];

/// `(template name, subject, text body, html body)` sources of each email.
macro_rules! email_sources {
    ($($name:literal),* $(,)?) => {
        [$((
            $name,
            include_str!(concat!("../../../email_templates/", $name, "/subject.txt.hbs")),
            include_str!(concat!("../../../email_templates/", $name, "/body.txt.hbs")),
            include_str!(concat!("../../../email_templates/", $name, "/body.html.hbs")),
        )),*]
    };
}

const EMAILS: [(&str, &str, &str, &str); 3] = email_sources!("verify_email", "password_reset", "password_changed");

/// The compiled templates. Build once at start-up and share (`Arc`); rendering is `&self`.
#[derive(Debug)]
pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl Templates {
    /// Compiles every embedded template; fails on a syntax error in any of them.
    pub fn new() -> anyhow::Result<Self> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        text.register_escape_fn(handlebars::no_escape);
        for hb in [&mut html, &mut text] {
            // A misspelt variable is an error, not a silently empty link.
            hb.set_strict_mode(true);
            for (name, source) in LAYOUTS {
                hb.register_partial(name, source).with_context(|| format!("email layout {name}"))?;
            }
        }
        for (name, subject, body_txt, body_html) in EMAILS {
            text.register_template_string(&format!("{name}/subject.txt"), subject)
                .with_context(|| format!("email template {name}/subject.txt.hbs"))?;
            text.register_template_string(&format!("{name}/body.txt"), body_txt)
                .with_context(|| format!("email template {name}/body.txt.hbs"))?;
            html.register_template_string(&format!("{name}/body.html"), body_html)
                .with_context(|| format!("email template {name}/body.html.hbs"))?;
        }
        Ok(Self { html, text })
    }

    /// Renders `name` with `ctx`, an object with `link`, `display_name` (may be empty or
    /// missing: the greeting then has no name), `expires_in` (e.g. "24 hours") and
    /// optionally `app_name` (default "Parley").
    pub fn render(&self, name: TemplateName, ctx: &Value) -> anyhow::Result<RenderedEmail> {
        let Some(fields) = ctx.as_object() else {
            anyhow::bail!("the context of email {name} must be a JSON object");
        };
        let mut fields = fields.clone();
        fields.entry("app_name").or_insert_with(|| Value::from("Parley"));
        fields.entry("expires_in").or_insert_with(|| Value::from(""));
        let display_name = match fields.get("display_name") {
            Some(Value::String(s)) => s.trim().to_owned(),
            _ => String::new(),
        };
        fields.insert("display_name".into(), Value::from(display_name));
        let ctx = Value::Object(fields);

        let n = name.as_str();
        let subject = self.text.render(&format!("{n}/subject.txt"), &ctx).with_context(|| format!("{n} subject"))?;
        Ok(RenderedEmail {
            // One line, whatever the context holds: a newline here would start a new header.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.text.render(&format!("{n}/body.txt"), &ctx).with_context(|| format!("{n} text body"))?,
            html: self.html.render(&format!("{n}/body.html"), &ctx).with_context(|| format!("{n} html body"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LINK: &str = "https://parley.test/verify?token=abc&next=/chat";

    fn render(name: TemplateName, ctx: Value) -> RenderedEmail {
        Templates::new().unwrap().render(name, &ctx).unwrap()
    }

    #[test]
    fn every_template_renders_a_subject_and_both_bodies_with_the_link() {
        for name in TemplateName::ALL {
            let email = render(name, json!({"display_name": "Ann", "link": LINK, "expires_in": "24 hours"}));
            assert!(!email.subject.is_empty() && !email.subject.contains('\n'), "{name}: {:?}", email.subject);
            assert!(email.subject.contains("Parley"), "{name}: {:?}", email.subject);
            assert!(email.text.contains(LINK), "{name}: {}", email.text);
            assert!(email.html.contains("href=\"https://parley.test/verify?token"), "{name}: {}", email.html);
            assert!(email.html.contains("&amp;next"), "{name}: {}", email.html);
            assert!(email.text.contains("Hello Ann,") && email.html.contains("Hello Ann,"), "{name}");
            assert!(email.html.contains("<html") && email.html.contains("</html>"), "{name}: layout missing");
        }
    }

    #[test]
    fn expiring_links_say_when_they_expire() {
        for name in [TemplateName::VerifyEmail, TemplateName::PasswordReset] {
            let email = render(name, json!({"link": LINK, "expires_in": "24 hours"}));
            assert!(email.text.contains("24 hours") && email.html.contains("24 hours"), "{name}");
        }
    }

    #[test]
    fn a_display_name_is_escaped_in_html_and_verbatim_in_text() {
        let ctx = json!({"display_name": "<script>alert(1)</script>", "link": LINK, "expires_in": "1 hour"});
        for name in TemplateName::ALL {
            let email = render(name, ctx.clone());
            assert!(!email.html.contains("<script>"), "{name}: {}", email.html);
            assert!(email.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{name}: {}", email.html);
            assert!(email.text.contains("Hello <script>alert(1)</script>,"), "{name}: {}", email.text);
        }
    }

    #[test]
    fn an_empty_or_missing_display_name_gets_a_greeting_without_a_name() {
        for ctx in [json!({"link": LINK}), json!({"link": LINK, "display_name": "  "}), json!({"link": LINK, "display_name": null})] {
            let email = render(TemplateName::PasswordChanged, ctx);
            assert!(email.text.starts_with("Hello,\n"), "{}", email.text);
            assert!(email.html.contains("<p>Hello,</p>"), "{}", email.html);
        }
    }

    #[test]
    fn a_missing_link_is_an_error_rather_than_an_email_without_one() {
        let err = Templates::new().unwrap().render(TemplateName::VerifyEmail, &json!({"display_name": "Ann"}));
        assert!(err.is_err());
    }

    #[test]
    fn template_names_match_their_directories() {
        let names: Vec<_> = TemplateName::ALL.iter().map(|n| n.as_str()).collect();
        let dirs: Vec<_> = EMAILS.iter().map(|e| e.0).collect();
        assert_eq!(names, dirs);
        assert_eq!(serde_json::to_value(TemplateName::PasswordReset).unwrap(), json!("password_reset"));
    }
}
