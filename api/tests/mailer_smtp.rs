//! The mailer against a wire-level SMTP sink: a real SMTP conversation from
//! `Mailer::from_config` to a delivered multipart/alternative message.

mod common;

use common::smtp_sink::SmtpSink;
use parley_shared::Config;
use parley_shared::mail::{Mailer, TemplateName, Templates};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const LINK: &str = "https://parley.test/verify-email?token=0123456789abcdef0123456789abcdef0123456789abcdef&next=/chat";

fn smtp_config(port: u16) -> Config {
    let vars: HashMap<String, String> = [
        ("PARLEY_SMTP_HOST", "127.0.0.1".to_owned()),
        ("PARLEY_SMTP_PORT", port.to_string()),
        ("PARLEY_SMTP_TLS", "none".to_owned()),
        ("PARLEY_EMAIL_FROM", "Parley Robot <robot@parley.test>".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Config::from_vars(vars).unwrap()
}

#[tokio::test]
async fn the_smtp_mailer_delivers_a_text_and_html_message_to_the_sink() {
    let sink = SmtpSink::start().await;
    let mailer = Mailer::from_config(&smtp_config(sink.port)).unwrap();
    let ctx = json!({"display_name": "<b>Ann</b>", "link": LINK, "expires_in": "24 hours"});
    let email = Templates::new().unwrap().render(TemplateName::VerifyEmail, &ctx).unwrap();

    let message_id = mailer.send("Ann <ann@example.com>", &email).await.unwrap();

    let mail = sink.wait_for(1, Duration::from_secs(20)).await.remove(0);
    assert_eq!(mail.from, "robot@parley.test");
    assert_eq!(mail.to, vec!["ann@example.com".to_owned()]);
    assert_eq!(mail.header("Subject").as_deref(), Some(email.subject.as_str()));
    assert_eq!(mail.header("Message-ID").as_deref(), Some(message_id.as_str()));
    assert!(mail.header("From").unwrap().contains("<robot@parley.test>"), "{}", mail.data);
    assert!(mail.header("Content-Type").unwrap().starts_with("multipart/alternative"), "{}", mail.data);
    let text = mail.part("text/plain").expect("a text/plain part");
    assert!(text.contains(LINK) && text.contains("Hello <b>Ann</b>,"), "{text}");
    let html = mail.part("text/html").expect("a text/html part");
    assert!(html.contains("&amp;next") && html.contains("Hello &lt;b&gt;Ann&lt;/b&gt;,"), "{html}");
    assert!(html.contains("href=\"https://parley.test/verify-email?token"), "{html}");
}

#[tokio::test]
async fn one_mailer_delivers_several_messages_over_its_pooled_connection() {
    let sink = SmtpSink::start().await;
    let mailer = Mailer::from_config(&smtp_config(sink.port)).unwrap();
    let templates = Templates::new().unwrap();

    for (name, to) in
        [(TemplateName::PasswordReset, "bob@example.com"), (TemplateName::PasswordChanged, "cy@example.com")]
    {
        let email = templates.render(name, &json!({"link": LINK, "expires_in": "1 hour"})).unwrap();
        mailer.send(to, &email).await.unwrap();
    }

    let mails = sink.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(mails[0].to, vec!["bob@example.com".to_owned()]);
    assert_eq!(mails[1].to, vec!["cy@example.com".to_owned()]);
    assert!(mails[0].header("Subject").unwrap().contains("Reset"), "{}", mails[0].data);
    assert!(mails[1].header("Subject").unwrap().contains("changed"), "{}", mails[1].data);
}
