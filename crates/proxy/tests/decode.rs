//! Property tests of the wire decoding: no input makes it panic, every
//! encoded message decodes back to itself, and a frame reader refuses
//! lengths beyond its limit.

use bytes::Bytes;
use pgfork_proxy::wire::FrameReader;
use pgfork_proxy::wire::backend::{Completion, ErrorFields};
use pgfork_proxy::wire::frontend::{
    Bind, Execute, Frontend, Parse, Query, SaslInitial, Startup, Target,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    // No NUL: strings are NUL-terminated on the wire.
    "[^\u{0}]{0,40}"
}

fn frontend() -> impl Strategy<Value = Frontend> {
    prop_oneof![
        text().prop_map(|sql| Frontend::Query(Query { sql: sql.into() })),
        (text(), text(), prop::collection::vec(any::<u32>(), 0..5)).prop_map(
            |(name, sql, param_types)| Frontend::Parse(Parse {
                name,
                sql: sql.into(),
                param_types
            })
        ),
        (
            text(),
            text(),
            prop::collection::vec(0i16..2, 0..4),
            prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
                0..4
            ),
            prop::collection::vec(0i16..2, 0..4),
        )
            .prop_map(
                |(portal, statement, param_formats, params, result_formats)| {
                    Frontend::Bind(Bind {
                        portal,
                        statement,
                        param_formats,
                        params: params.into_iter().map(|p| p.map(Bytes::from)).collect(),
                        result_formats,
                    })
                }
            ),
        (text(), any::<i32>())
            .prop_map(|(portal, max_rows)| Frontend::Execute(Execute { portal, max_rows })),
        (prop_oneof![Just(b'S'), Just(b'P')], text())
            .prop_map(|(kind, name)| Frontend::Describe(Target { kind, name })),
        (prop_oneof![Just(b'S'), Just(b'P')], text())
            .prop_map(|(kind, name)| Frontend::Close(Target { kind, name })),
        Just(Frontend::Sync),
        Just(Frontend::Flush),
        Just(Frontend::Terminate),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|d| Frontend::CopyData(Bytes::from(d))),
        Just(Frontend::CopyDone),
        text().prop_map(Frontend::CopyFail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_decode_without_panicking(tag in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let body = Bytes::from(body);
        let _ = Frontend::decode(tag, body.clone());
        let _ = Startup::decode(&body);
        let _ = SaslInitial::decode(&body);
        let _ = ErrorFields::decode(&body);
        let _ = Completion::decode(&body);
        let _ = pgfork_proxy::wire::backend::decode_key_data(&body);
        let _ = pgfork_proxy::wire::backend::decode_auth(&body);
        let _ = pgfork_proxy::wire::backend::ready_status(&body);
    }

    #[test]
    fn encoded_messages_decode_to_themselves(msg in frontend()) {
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf);
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        prop_assert_eq!(len + 1, buf.len());
        let back = Frontend::decode(tag, Bytes::copy_from_slice(&buf[5..])).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn startup_packets_round_trip(params in prop::collection::vec(("[a-z_]{1,12}", text()), 0..6), minor in 0u16..3) {
        let msg = Startup::Session { minor, params };
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf);
        prop_assert_eq!(Startup::decode(&buf[4..]).unwrap(), msg);
    }

    #[test]
    fn truncated_messages_are_errors(msg in frontend(), cut in 1usize..8) {
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf);
        let body = &buf[5..];
        if body.len() >= cut && !matches!(msg, Frontend::CopyData(_)) {
            let short = Bytes::copy_from_slice(&body[..body.len() - cut]);
            prop_assert!(Frontend::decode(buf[0], short).is_err());
        }
    }

    #[test]
    fn the_frame_reader_never_panics(chunks in prop::collection::vec(any::<u8>(), 0..512), max in 5usize..64) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = FrameReader::new(&chunks[..], max);
            while let Ok(Some(f)) = r.next().await {
                assert!(f.body.len() + 4 <= max);
            }
            let mut r = FrameReader::new(&chunks[..], max);
            let _ = r.startup().await;
        });
    }
}

#[test]
fn oversized_frames_are_refused_before_reading_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let header = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        let mut r = FrameReader::new(&header[..], 1 << 20);
        let err = r.next().await.unwrap_err();
        assert!(err.to_string().contains("larger than the limit"), "{err}");
    });
}
