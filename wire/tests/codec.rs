//! Round trips, pinned encodings and hostile input for every frame.

use mlschat_wire::frame::{self, FrameError, HEADER_LEN, Header};
use mlschat_wire::*;

fn vl(bytes: &[u8]) -> tls_codec::VLBytes {
    bytes.into()
}

fn requests() -> Vec<Request> {
    let group = FetchGroup {
        group_id: vl(b"g1"),
        token: [7; 32],
        after_seq: 41,
        limit: 100,
    };
    vec![
        Request::Challenge,
        Request::Register(Register {
            signature_key: vl(&[1; 32]),
            invite: vl(b"invite-123"),
            signature: vl(&[2; 64]),
        }),
        Request::Authenticate(Authenticate {
            signature_key: vl(&[1; 32]),
            signature: vl(&[2; 64]),
        }),
        Request::PublishKeyPackages(PublishKeyPackages {
            one_time: vec![vl(b"kp1"), vl(b"kp2")],
            last_resort: vl(b""),
        }),
        Request::ClaimKeyPackage { owner: [9; 32] },
        Request::KeyPackageStock,
        Request::ClaimLog { after: 3 },
        Request::ClaimKeyPackages {
            owners: vec![[9; 32], [8; 32]],
        },
        Request::CreateGroup(CreateGroup {
            group_id: vl(b"g1"),
            token_hash: [5; 32],
        }),
        Request::PostCommit(PostCommit {
            group_id: vl(b"g1"),
            epoch: 4,
            token: [6; 32],
            next_token_hash: [8; 32],
            commit: vl(b"commit"),
            welcomes: vec![WelcomeFor {
                recipient: [3; 32],
                welcome: vl(b"welcome"),
                tree_key: vl(b"sealed secret"),
            }],
            sealed_tree: vl(b"sealed tree"),
            tree_access_hash: [2; 32],
        }),
        Request::PostNotice(PostNotice {
            group_id: vl(b"g1"),
            token: [6; 32],
            notice: vl(b"signed notice"),
        }),
        Request::PostMessage(PostMessage {
            group_id: vl(b"g1"),
            epoch: 4,
            token: [6; 32],
            post_id: [9; 16],
            message: vl(b"hello"),
        }),
        Request::FetchGroup(group.clone()),
        Request::FetchTree(FetchTree {
            group_id: vl(b"g1"),
            epoch: 5,
            access: [4; 32],
        }),
        Request::Subscribe(group),
        Request::FetchMailbox {
            after: 0,
            limit: 10,
        },
        Request::AckMailbox { up_to: 12 },
    ]
}

fn responses() -> Vec<Response> {
    let entry = GroupEntry {
        seq: 1,
        epoch: 2,
        kind: EntryKind::Commit,
        message: vl(b"m"),
    };
    vec![
        Response::Error(ErrorResponse {
            code: ErrorCode::StaleEpoch,
            current_epoch: 9,
            detail: vl(b"group is at epoch 9"),
        }),
        Response::Ok,
        Response::Challenge { nonce: [4; 32] },
        Response::Authenticated { client: [1; 32] },
        Response::KeyPackage {
            key_package: vl(b"kp"),
        },
        Response::KeyPackageStock {
            one_time: 3,
            last_resort: Flag::Yes,
        },
        Response::ClaimLog {
            entries: vec![ClaimLogEntry {
                seq: 1,
                claimer: [2; 32],
                at: 1_700_000_000,
                last_resort: Flag::No,
                reference: vl(b"kp ref"),
            }],
        },
        Response::KeyPackages {
            claims: vec![
                ClaimAnswer::KeyPackage(vl(b"kp")),
                ClaimAnswer::Refused(ErrorResponse {
                    code: ErrorCode::NoKeyPackage,
                    current_epoch: 0,
                    detail: vl(b"none"),
                }),
            ],
        },
        Response::Accepted { seq: 10, epoch: 3 },
        Response::Committed {
            seq: 11,
            epoch: 4,
            undelivered: vec![[9; 32]],
        },
        Response::GroupEntries {
            entries: vec![entry],
        },
        Response::Tree {
            sealed_tree: vl(b"sealed tree"),
        },
        Response::Mailbox {
            entries: vec![MailboxEntry {
                id: 1,
                group_id: vl(b"g1"),
                epoch: 3,
                welcome: vl(b"w"),
                tree_key: vl(b"k"),
            }],
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for r in requests() {
        let bytes = frame::encode(&r).unwrap();
        assert_eq!(frame::decode::<Request>(&bytes, MAX_FRAME).unwrap(), r);
    }
    for r in responses() {
        let bytes = frame::encode(&r).unwrap();
        assert_eq!(frame::decode::<Response>(&bytes, MAX_FRAME).unwrap(), r);
    }
    let push = Push::Group {
        group_id: vl(b"g"),
        entry: GroupEntry {
            seq: 7,
            epoch: 1,
            kind: EntryKind::Message,
            message: vl(b"hi"),
        },
    };
    let bytes = frame::encode(&push).unwrap();
    assert_eq!(frame::decode::<Push>(&bytes, MAX_FRAME).unwrap(), push);
}

/// These bytes are the protocol: PROTOCOL.md shows the same ones. Change them only with a new
/// protocol version.
#[test]
fn encodings_are_pinned() {
    let cases: Vec<(Request, &str)> = vec![
        (
            Request::Challenge,
            "000100000002" /* header */
                .to_owned()
                + "0001",
        ),
        (
            Request::ClaimLog { after: 3 },
            "00010000000a".to_owned() + "000d" + "0000000000000003",
        ),
        (
            Request::ClaimKeyPackages {
                owners: vec![[9; 32]],
            },
            "000100000023".to_owned() + "000e" + "20" + &"09".repeat(32),
        ),
        (
            Request::PostMessage(PostMessage {
                group_id: vl(b"g1"),
                epoch: 4,
                token: [6; 32],
                post_id: [7; 16],
                message: vl(b"hi"),
            }),
            "00010000004000160267310000000000000004".to_owned()
                + &"06".repeat(32)
                + &"07".repeat(16)
                + "026869",
        ),
    ]
    .into_iter()
    .map(|(r, hex)| (r, hex.leak() as &str))
    .collect();
    for (request, expected) in cases {
        assert_eq!(
            hex::encode(frame::encode(&request).unwrap()),
            expected,
            "{request:?}"
        );
    }
    let error = Response::Error(ErrorResponse {
        code: ErrorCode::StaleEpoch,
        current_epoch: 9,
        detail: vl(b"x"),
    });
    assert_eq!(
        hex::encode(frame::encode(&error).unwrap()),
        "00010000000e".to_owned() + "0000" + "000a" + "0000000000000009" + "0178"
    );
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(&VERSION.to_be_bytes());
    header[2..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Header::parse(&header, MAX_FRAME),
        Err(FrameError::TooLarge {
            length: u32::MAX,
            limit: MAX_FRAME
        })
    );
    // A reader with a smaller limit refuses what the default would take.
    header[2..].copy_from_slice(&2000u32.to_be_bytes());
    assert!(Header::parse(&header, 1024).is_err());
    assert!(Header::parse(&header, 4096).is_ok());
}

#[test]
fn other_versions_truncation_and_trailing_bytes_are_refused() {
    let good = frame::encode(&Request::ClaimLog { after: 3 }).unwrap();
    let mut v2 = good.clone();
    v2[1] = 2;
    assert_eq!(
        frame::decode::<Request>(&v2, MAX_FRAME),
        Err(FrameError::UnsupportedVersion(2))
    );
    for cut in [0, 3, HEADER_LEN, good.len() - 1] {
        assert_eq!(
            frame::decode::<Request>(&good[..cut], MAX_FRAME),
            Err(FrameError::Truncated),
            "cut at {cut}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        frame::decode::<Request>(&long, MAX_FRAME),
        Err(FrameError::Malformed(_))
    ));
    // A body with a byte the message does not use.
    let mut body = frame::encode(&Request::Challenge).unwrap();
    body.push(0xff);
    body[5] += 1;
    assert!(matches!(
        frame::decode::<Request>(&body, MAX_FRAME),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn unknown_kinds_and_bad_flags_are_malformed() {
    let mut unknown = frame::encode(&Request::Challenge).unwrap();
    unknown[HEADER_LEN + 1] = 99;
    assert!(matches!(
        frame::decode::<Request>(&unknown, MAX_FRAME),
        Err(FrameError::Malformed(_))
    ));
    let mut flag = frame::encode(&Response::KeyPackageStock {
        one_time: 1,
        last_resort: Flag::No,
    })
    .unwrap();
    *flag.last_mut().unwrap() = 2;
    assert!(matches!(
        frame::decode::<Response>(&flag, MAX_FRAME),
        Err(FrameError::Malformed(_))
    ));
}

/// Random and mutated input never panics and never decodes to something else silently.
#[test]
fn hostile_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples: Vec<Vec<u8>> = requests()
        .iter()
        .map(|r| frame::encode(r).unwrap())
        .collect();
    for i in 0..20_000 {
        let mut bytes = samples[i % samples.len()].clone();
        match next() % 4 {
            0 => {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            1 => bytes.truncate((next() as usize) % bytes.len()),
            2 => bytes = (0..(next() % 64)).map(|_| next() as u8).collect(),
            _ => {
                // A vector length inside the body that claims far more than there is.
                if bytes.len() > HEADER_LEN + 3 {
                    bytes[HEADER_LEN + 2] = 0xbf;
                }
            }
        }
        let _ = frame::decode::<Request>(&bytes, MAX_FRAME);
        let _ = frame::decode::<Response>(&bytes, MAX_FRAME);
        let _ = frame::decode::<Push>(&bytes, MAX_FRAME);
    }
}
