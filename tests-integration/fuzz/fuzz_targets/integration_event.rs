//! An integration event as it arrives from NATS: headers and a protobuf payload, both from a
//! peer that may be wrong. Reading it names what is missing or malformed; what is read writes
//! back to the same headers; the payload decodes or is refused, never a panic.
#![no_main]

use agora_eventstore::jetstream::IntegrationEvent;
use async_nats::HeaderMap;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The input's lines up to the first empty one are `Name: value` headers; the rest is the
/// payload.
fn message(input: &[u8]) -> (HeaderMap, Bytes) {
    let split = input.windows(2).position(|w| w == b"\n\n").map_or(input.len(), |at| at);
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(&input[..split]).lines() {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if valid(name) && !name.contains(' ') && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                headers.insert(name, value);
            }
        }
    }
    let payload = input.get(split + 2..).unwrap_or_default();
    (headers, Bytes::copy_from_slice(payload))
}

fuzz_target!(|input: &[u8]| {
    let (headers, data) = message(input);
    let Ok(event) = IntegrationEvent::from_message("hearing.v1.fuzz", Some(&headers), data.clone()) else { return };
    // Written back and read again, it is the same event (its time as precise as the store keeps it).
    let again = IntegrationEvent::from_message("hearing.v1.fuzz", Some(&event.to_headers()), data.clone())
        .expect("an event's own headers read back");
    let third = IntegrationEvent::from_message("hearing.v1.fuzz", Some(&again.to_headers()), data)
        .expect("an event's own headers read back");
    assert_eq!((again.id, again.sequence, again.position), (event.id, event.sequence, event.position));
    assert_eq!((&again.event_type, &again.hash, again.time), (&third.event_type, &third.hash, third.time));
    let _ = agora_proto::hearing_state(&event.event_type, &event.data);
    let _ = agora_proto::response::v1::ResponseSubmitted::decode(event.data.clone());
});
