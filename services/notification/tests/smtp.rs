//! E-mail to a real SMTP server process (aiosmtpd), read back as a mail client would.

mod support;

use agora_notification::message::{UnsubscribeSigner, message_id};
use agora_notification::smtp::{Email, SendError, SmtpChannel};
use agora_notification::templates::{Kind, Language, default_template};
use support::SmtpServer;

fn channel(port: u16) -> SmtpChannel {
    support::channel_to(port)
}

fn receipt(language: Language, to: &str) -> Email {
    let values = [
        ("recipient_name", "Birgitte Ærø"),
        ("portal_name", "Bliv hørt"),
        ("portal_url", "https://blivhoert.kk.example"),
        ("unsubscribe_url", "https://blivhoert.kk.example/afmeld/abc.def"),
        ("hearing_title", "Lokalplan for Bytorvet & omegn"),
        ("hearing_url", "https://blivhoert.kk.example/hoeringer/1"),
        ("response_number", "7"),
        ("received_at", "29-11-2026 10:15"),
        ("receipt_hash", "9f86d081884c7d65"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let content = default_template(Kind::ResponseReceipt, language).render(&values).expect("renders");
    Email {
        message_id: message_id(uuid::Uuid::from_u128(7), to, Kind::ResponseReceipt, "kk.example"),
        to: to.into(),
        language,
        content,
        unsubscribe_url: Some(
            UnsubscribeSigner::new(b"0123456789abcdef0123456789abcdef").sign("kind:response_receipt"),
        ),
    }
}

#[tokio::test]
async fn a_receipt_arrives_as_text_and_html_in_its_language_with_its_message_id_and_one_click_unsubscribe() {
    let Some(server) = SmtpServer::start().await else { return };
    let channel = channel(server.port);
    channel.send(&receipt(Language::Danish, "birgitte@borger.example")).await.expect("sent");
    channel.send(&receipt(Language::English, "erik@borger.example")).await.expect("sent");
    let mut received = server.wait_for(2).await;
    received.sort_by_key(|m| m["rcpt_tos"][0].as_str().unwrap_or_default().to_string());
    let danish = &received[0];
    assert_eq!(danish["rcpt_tos"][0], "birgitte@borger.example");
    assert_eq!(danish["mail_from"], "hoeringer@kk.example");
    assert_eq!(danish["content_type"], "multipart/alternative");
    assert_eq!(danish["headers"]["Subject"], "Kvittering for dit høringssvar nr. 7");
    assert_eq!(danish["headers"]["From"], "Københavns Kommune <hoeringer@kk.example>");
    assert_eq!(danish["headers"]["Content-Language"], "da");
    let id = message_id(uuid::Uuid::from_u128(7), "birgitte@borger.example", Kind::ResponseReceipt, "kk.example");
    assert_eq!(danish["headers"]["Message-ID"], id);
    let unsubscribe = danish["headers"]["List-Unsubscribe"].as_str().expect("List-Unsubscribe");
    assert!(unsubscribe.starts_with('<') && unsubscribe.ends_with('>'), "{unsubscribe}");
    assert_eq!(danish["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    let text = danish["text"].as_str().expect("text part");
    assert!(text.contains("Kære Birgitte Ærø") && text.contains("9f86d081884c7d65"), "{text}");
    let html = danish["html"].as_str().expect("html part");
    assert!(html.contains("Lokalplan for Bytorvet &amp; omegn"), "escaped in HTML: {html}");
    let english = &received[1];
    assert_eq!(english["headers"]["Subject"], "Receipt for your response no. 7");
    assert_eq!(english["headers"]["Content-Language"], "en");
}

#[tokio::test]
async fn a_bad_address_is_refused_for_good_and_an_unreachable_server_is_worth_a_retry() {
    let channel_to_nowhere = channel(1);
    let refused = channel_to_nowhere.send(&receipt(Language::Danish, "ikke en adresse")).await.expect_err("bad");
    assert!(matches!(&refused, SendError::Permanent(m) if m.contains("ikke en adresse")), "{refused}");
    let unreachable = channel_to_nowhere.send(&receipt(Language::Danish, "a@b.example")).await.expect_err("down");
    assert!(matches!(unreachable, SendError::Transient(_)), "{unreachable}");
}
