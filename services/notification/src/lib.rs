//! The notification service: tells people what happened to the hearings they are part of or
//! follow, in their language, by e-mail (and, for citizens and companies, Digital Post), each
//! message once.
//!
//! So far: the message templates per notification type and language, checked when saved and
//! filled with escaping (`templates`); the Message-ID that makes a repeat recognisable and the
//! signed one-click unsubscribe links (`message`); and e-mail over SMTP (`smtp`). The queue,
//! the event handlers, subscriptions, digests and Digital Post are issue 6's next steps.

pub mod message;
pub mod smtp;
pub mod templates;
