use super::*;
use crate::sip::message::parse;

const CALLER_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n\
t=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\n";
const CALLEE_SDP: &str = "v=0\r\no=bob 7 7 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\n\
t=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn with_body(head: &str, body: &str) -> Message {
    let text = format!(
        "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse(text.as_bytes()).unwrap()
}

fn caller_invite() -> Message {
    with_body(
        "INVITE sip:200@pbx.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@pbx.example>;tag=a-tag\r\n\
         To: <sip:200@pbx.example>\r\n\
         Call-ID: call-a@10.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@10.0.0.1:5060>\r\n",
        CALLER_SDP,
    )
}

fn config() -> CallConfig {
    CallConfig {
        no_answer: Duration::from_secs(30),
        no_answer_status: 480,
        contact: NameAddr::parse("<sip:pbx@192.0.2.1:5060>").unwrap(),
        via: Via::parse("SIP/2.0/UDP 192.0.2.1:5060;rport").unwrap(),
        caller_id: NameAddr::parse("\"Alice Smith\" <sip:100@pbx.example>").unwrap(),
    }
}

fn targets(n: usize) -> Vec<Target> {
    (0..n)
        .map(|i| {
            Target::phone(
                Uri::parse(&format!("sip:bob@10.0.1.{i}:5062")).unwrap(),
                format!("phone:{i}"),
            )
        })
        .collect()
}

fn drain(call: &mut Call) -> Vec<Action> {
    std::iter::from_fn(|| call.poll_action()).collect()
}

/// The callee's answer to a branch's INVITE.
fn answer(invite: &Message, status: u16, tag: &str, sdp: Option<&str>) -> Message {
    let mut r = Message::response_to(invite, status, message::reason_phrase(status));
    r.set_to_tag(tag).unwrap();
    if status < 300 {
        r.push_header(HeaderName::Contact, "<sip:bob@10.0.1.9:5062>")
            .unwrap();
    }
    if let Some(sdp) = sdp {
        r.set_body(sdp.as_bytes().to_vec(), Some("application/sdp"))
            .unwrap();
    }
    parse(&r.to_bytes()).unwrap()
}

fn invites(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Invite { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

fn caller_answers(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AnswerCaller(m) => m.status(),
            _ => None,
        })
        .collect()
}

fn cancels(actions: &[Action]) -> Vec<(usize, Option<&'static str>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { branch, reason } => Some((*branch, *reason)),
            _ => None,
        })
        .collect()
}

/// The 200 the call sent the caller.
fn ok_to_caller(actions: &[Action]) -> Message {
    actions
        .iter()
        .find_map(|x| match x {
            Action::AnswerCaller(m) if m.status() == Some(200) => Some(m.clone()),
            _ => None,
        })
        .expect("a 200 to the caller")
}

fn started(n: usize) -> (Call, Vec<Message>, Instant) {
    let t0 = Instant::now();
    let mut call = Call::new(caller_invite(), "pbx-tag", targets(n), config(), 42, t0).unwrap();
    let inv = invites(&drain(&mut call));
    assert_eq!(inv.len(), n);
    (call, inv, t0)
}

/// An answered call: branch 0 of two took it.
fn answered() -> (Call, Vec<Message>, Instant) {
    let (mut call, inv, t0) = started(2);
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    drain(&mut call);
    (call, inv, t0)
}

#[test]
fn every_target_gets_its_own_invite_with_the_callers_session_and_caller_id() {
    let (_, inv, _) = started(3);
    let ids: std::collections::HashSet<_> = inv.iter().map(|m| m.call_id().unwrap()).collect();
    assert_eq!(ids.len(), 3, "each branch needs its own Call-ID");
    for (i, m) in inv.iter().enumerate() {
        assert_eq!(
            m.uri().unwrap().to_string(),
            format!("sip:bob@10.0.1.{i}:5062")
        );
        let from = m.from().unwrap();
        assert_eq!(from.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(from.uri.to_string(), "sip:100@pbx.example");
        assert!(from.tag().is_some());
        assert!(m.to().unwrap().tag().is_none());
        assert_eq!(m.body(), CALLER_SDP.as_bytes());
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.max_forwards(), Some(69));
        assert_eq!(m.cseq().unwrap().seq, 1);
        assert!(m.top_via().unwrap().is_rfc3261_branch());
        assert_eq!(
            m.contacts()[0].uri.to_string(),
            "sip:pbx@192.0.2.1:5060",
            "our Contact, not the caller's"
        );
    }
}

#[test]
fn first_answer_wins_and_the_other_branches_are_cancelled_as_completed_elsewhere() {
    let (mut call, inv, t0) = started(3);
    call.on_invite_response(1, &answer(&inv[1], 180, "b1", None), t0);
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), vec![180]);

    let t1 = t0 + Duration::from_secs(4);
    call.on_invite_response(2, &answer(&inv[2], 200, "b2", Some(CALLEE_SDP)), t1);
    let a = drain(&mut call);
    let acks: Vec<&OutgoingRequest> = a
        .iter()
        .filter_map(|x| match x {
            Action::Ack { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1);
    let ack = &acks[0].message;
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.call_id(), inv[2].call_id());
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.uri().unwrap().to_string(), "sip:bob@10.0.1.9:5062");
    assert_eq!(
        cancels(&a),
        vec![
            (0, Some(COMPLETED_ELSEWHERE)),
            (1, Some(COMPLETED_ELSEWHERE))
        ]
    );
    let ok = a
        .iter()
        .find_map(|x| match x {
            Action::AnswerCaller(m) if m.status() == Some(200) => Some(m),
            _ => None,
        })
        .expect("200 to the caller");
    assert_eq!(ok.body(), CALLEE_SDP.as_bytes());
    assert!(ok.to().unwrap().tag().is_some());
    // The 180 and the 200 carry the same To tag: one dialog with the caller.
    assert_eq!(ok.call_id(), Some("call-a@10.0.0.1"));

    let s = call.summary();
    assert_eq!(s.outcome, Outcome::Answered);
    assert_eq!(s.answered, Some(t1));
    assert_eq!(s.answered_by.as_deref(), Some("phone:2"));
    assert!(!call.is_finished());
}

#[test]
fn a_second_2xx_from_a_fork_further_on_is_acknowledged_and_hung_up() {
    let (mut call, inv, t0) = answered();
    // The same 2xx again: a retransmission, nothing new to do here.
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    assert!(drain(&mut call).is_empty());
    // A 2xx with another To tag on the winning branch: a second callee behind a forking proxy.
    call.on_invite_response(0, &answer(&inv[0], 200, "b0-fork", Some(CALLEE_SDP)), t0);
    let a = drain(&mut call);
    let to_tag = |m: &Message| m.to().and_then(|t| t.tag()).map(str::to_owned);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Ack { towards: Towards::Branch(0), request }
        if to_tag(&request.message).as_deref() == Some("b0-fork"))
        ),
        "{a:?}"
    );
    assert!(
        a.iter().any(|x| matches!(x, Action::Request { request, .. }
        if request.message.method() == Some(&Method::Bye)
            && to_tag(&request.message).as_deref() == Some("b0-fork"))),
        "{a:?}"
    );
    assert!(call.is_answered());
}

#[test]
fn ringing_is_passed_on_once_and_early_media_once() {
    let (mut call, inv, t0) = started(2);
    call.on_invite_response(0, &answer(&inv[0], 180, "b0", None), t0);
    call.on_invite_response(1, &answer(&inv[1], 180, "b1", None), t0);
    call.on_invite_response(1, &answer(&inv[1], 183, "b1", Some(CALLEE_SDP)), t0);
    call.on_invite_response(0, &answer(&inv[0], 183, "b0", Some(CALLEE_SDP)), t0);
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), vec![180, 183]);
}

#[test]
fn a_2xx_crossing_our_cancel_is_acknowledged_and_hung_up() {
    let (mut call, inv, t0) = answered();
    call.on_invite_response(1, &answer(&inv[1], 200, "b1", Some(CALLEE_SDP)), t0);
    let a = drain(&mut call);
    assert!(
        matches!(&a[0], Action::Ack { request, .. } if request.message.call_id() == inv[1].call_id())
    );
    match &a[1] {
        Action::Request { request, .. } => {
            assert_eq!(request.message.method(), Some(&Method::Bye));
            assert_eq!(request.message.call_id(), inv[1].call_id());
            assert_eq!(request.message.to().unwrap().tag(), Some("b1"));
        }
        other => panic!("expected BYE, got {other:?}"),
    }
    assert!(caller_answers(&a).is_empty());
    assert_eq!(call.summary().answered_by.as_deref(), Some("phone:0"));
}

#[test]
fn busy_only_when_every_branch_is_busy() {
    let (mut call, inv, t0) = started(2);
    call.on_invite_response(0, &answer(&inv[0], 486, "b0", None), t0);
    assert!(
        caller_answers(&drain(&mut call)).is_empty(),
        "one branch still rings"
    );
    call.on_invite_response(1, &answer(&inv[1], 486, "b1", None), t0);
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), vec![486]);
    assert!(matches!(a.last(), Some(Action::Ended)));
    assert_eq!(call.summary().outcome, Outcome::Busy);
    assert!(call.is_finished());

    let (mut call, inv, t0) = started(2);
    call.on_invite_response(0, &answer(&inv[0], 486, "b0", None), t0);
    call.on_invite_response(1, &answer(&inv[1], 480, "b1", None), t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);
    assert_eq!(call.summary().outcome, Outcome::NoAnswer);

    let (mut call, inv, t0) = started(2);
    call.on_invite_response(0, &answer(&inv[0], 404, "b0", None), t0);
    call.on_invite_timeout(1, t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);
}

/// A branch's 3xx: the forwarding phone's answer, with `contacts` as Contact fields.
fn redirect(invite: &Message, contacts: &[&str]) -> Message {
    let mut r = answer(invite, 302, "fwd", None);
    for c in contacts {
        r.push_header(HeaderName::Contact, c).unwrap();
    }
    parse(&r.to_bytes()).unwrap()
}

/// A call ringing one phone of user 7, whose redirects are followed.
fn forwarding_call(t0: Instant) -> (Call, Message) {
    let target = Target {
        forwarded_as: Some(7),
        ..targets(1).remove(0)
    };
    let mut call = Call::new(caller_invite(), "pbx-tag", vec![target], config(), 5, t0).unwrap();
    let inv = invites(&drain(&mut call)).remove(0);
    (call, inv)
}

#[test]
fn a_phones_redirect_is_routed_as_its_user_and_rings_where_it_leads() {
    let t0 = Instant::now();
    let (mut call, inv) = forwarding_call(t0);
    call.on_invite_response(
        0,
        &redirect(
            &inv,
            &[
                "<sip:301@pbx.example>;q=0.5",
                "<sip:300@pbx.example>;q=0.9",
                "<tel:+4930123>",
            ],
        ),
        t0,
    );
    let a = drain(&mut call);
    assert!(caller_answers(&a).is_empty(), "the caller waits: {a:?}");
    let Some(Action::Redirect {
        branch,
        user,
        contacts,
    }) = a.first()
    else {
        panic!("no redirect: {a:?}");
    };
    assert_eq!((*branch, *user), (0, 7));
    // Best first; no q counts as 1.
    let order: Vec<String> = contacts.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        order,
        ["tel:+4930123", "sip:300@pbx.example", "sip:301@pbx.example"]
    );

    let forward = Target::phone(Uri::parse("sip:carol@10.0.2.1").unwrap(), "phone:9".into());
    assert_eq!(call.on_redirect(0, vec![forward], t0), Some(1));
    let new = invites(&drain(&mut call));
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].uri().unwrap().to_string(), "sip:carol@10.0.2.1");
    // The one rung through the forward sees the real caller.
    assert_eq!(
        new[0].from().unwrap().display_name.as_deref(),
        Some("Alice Smith")
    );
    call.on_invite_response(1, &answer(&new[0], 200, "c1", Some(CALLEE_SDP)), t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![200]);
    assert_eq!(call.summary().answered_by.as_deref(), Some("phone:9"));
}

#[test]
fn a_redirect_that_leads_nowhere_ends_like_an_unavailable_callee() {
    let t0 = Instant::now();
    let (mut call, inv) = forwarding_call(t0);
    call.on_invite_response(0, &redirect(&inv, &["<sip:999@pbx.example>"]), t0);
    assert!(caller_answers(&drain(&mut call)).is_empty());
    assert_eq!(call.on_redirect(0, Vec::new(), t0), Some(1));
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);
    assert!(call.is_finished());
}

#[test]
fn redirects_are_not_followed_from_trunks_without_contacts_or_past_the_limit() {
    let t0 = Instant::now();
    // A target whose redirects are not followed (a trunk, click-to-call's own legs).
    let (mut call, inv, t0) = {
        let (c, i, _) = started(1);
        (c, i, t0)
    };
    call.on_invite_response(0, &redirect(&inv[0], &["<sip:300@pbx.example>"]), t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);

    let (mut call, inv) = forwarding_call(t0);
    call.on_invite_response(0, &redirect(&inv, &[]), t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);

    // Two phones forwarding to each other: followed MAX_REDIRECTS times, then the caller hears
    // that nobody is available.
    let (mut call, mut inv) = forwarding_call(t0);
    for hop in 0..usize::from(MAX_REDIRECTS) {
        call.on_invite_response(hop, &redirect(&inv, &["<sip:200@pbx.example>"]), t0);
        let a = drain(&mut call);
        assert!(
            matches!(a.as_slice(), [Action::Redirect { branch, .. }] if *branch == hop),
            "{a:?}"
        );
        let again = Target {
            forwarded_as: Some(7),
            ..targets(1).remove(0)
        };
        assert_eq!(call.on_redirect(hop, vec![again], t0), Some(hop + 1));
        inv = invites(&drain(&mut call)).remove(0);
    }
    let last = usize::from(MAX_REDIRECTS);
    call.on_invite_response(last, &redirect(&inv, &["<sip:200@pbx.example>"]), t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![480]);
}

#[test]
fn a_redirect_resolved_after_the_caller_gave_up_rings_nobody() {
    let t0 = Instant::now();
    let (mut call, inv) = forwarding_call(t0);
    call.on_invite_response(0, &redirect(&inv, &["<sip:300@pbx.example>"]), t0);
    drain(&mut call);
    call.on_caller_cancel(t0);
    assert_eq!(caller_answers(&drain(&mut call)), vec![487]);
    let late = Target::phone(Uri::parse("sip:carol@10.0.2.1").unwrap(), "phone:9".into());
    assert_eq!(call.on_redirect(0, vec![late], t0), None);
    assert!(invites(&drain(&mut call)).is_empty());
    assert!(call.is_finished());
}

#[test]
fn final_answer_mapping() {
    assert_eq!(final_for_caller(&[486, 600]), (486, Outcome::Busy));
    assert_eq!(final_for_caller(&[486, 603]), (603, Outcome::Busy));
    assert_eq!(final_for_caller(&[486, 487]), (480, Outcome::NoAnswer));
    assert_eq!(final_for_caller(&[404, 500]), (404, Outcome::Failed));
    // Never a 3xx without its Contact, never a challenge meant for us.
    assert_eq!(final_for_caller(&[302]), (480, Outcome::Failed));
    assert_eq!(final_for_caller(&[407, 500]), (500, Outcome::Failed));
}

#[test]
fn no_answer_in_time_cancels_everything_and_tells_the_caller() {
    let (mut call, inv, t0) = started(2);
    assert_eq!(call.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    call.handle_timeout(t0 + Duration::from_secs(29));
    assert!(drain(&mut call).is_empty());
    let t = t0 + Duration::from_secs(30);
    call.handle_timeout(t);
    let a = drain(&mut call);
    assert_eq!(cancels(&a), vec![(0, None), (1, None)]);
    assert_eq!(caller_answers(&a), vec![480]);
    assert_eq!(call.summary().outcome, Outcome::NoAnswer);
    assert_eq!(call.summary().ended, Some(t));
    assert_eq!(call.poll_timeout(), None);
    // Not finished until the cancelled branches have their 487s.
    assert!(!call.is_finished());
    call.on_invite_response(0, &answer(&inv[0], 487, "b0", None), t);
    call.on_invite_response(1, &answer(&inv[1], 487, "b1", None), t);
    assert!(call.is_finished());
    assert!(
        drain(&mut call).is_empty(),
        "487s of our CANCELs change nothing"
    );
}

#[test]
fn the_caller_cancelling_cancels_every_branch() {
    let (mut call, _, t0) = started(3);
    call.on_caller_cancel(t0);
    let a = drain(&mut call);
    assert_eq!(cancels(&a).len(), 3);
    assert_eq!(caller_answers(&a), vec![487]);
    assert_eq!(call.summary().outcome, Outcome::Cancelled);
}

#[test]
fn nobody_reachable_is_answered_at_once() {
    let t0 = Instant::now();
    let mut call = Call::new(caller_invite(), "pbx-tag", Vec::new(), config(), 1, t0).unwrap();
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), vec![480]);
    assert!(matches!(a.last(), Some(Action::Ended)));
    assert!(call.is_finished());
    assert_eq!(call.summary().outcome, Outcome::Failed);
}

/// A request from the callee inside its dialog with us.
fn from_callee(invite: &Message, method: &str, cseq: u32) -> Message {
    let from_tag = invite.from().unwrap().tag().unwrap();
    parse(
        format!(
            "{method} sip:pbx@192.0.2.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.1.9:5062;branch=z9hG4bK-c{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@10.0.1.0:5062>;tag=b0\r\n\
             To: \"Alice Smith\" <sip:100@pbx.example>;tag={from_tag}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            invite.call_id().unwrap()
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A request from the caller inside its dialog with us.
fn from_caller(call: &Call, method: &str, cseq: u32, sdp: Option<&str>) -> Message {
    let to_tag = call.caller.id().local_tag.clone();
    let head = format!(
        "{method} sip:pbx@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-r{cseq}{method}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@pbx.example>;tag=a-tag\r\n\
         To: <sip:200@pbx.example>;tag={to_tag}\r\n\
         Call-ID: call-a@10.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n"
    );
    match sdp {
        Some(sdp) => with_body(&head, sdp),
        None => parse(format!("{head}Content-Length: 0\r\n\r\n").as_bytes()).unwrap(),
    }
}

#[test]
fn bye_from_the_callee_hangs_up_the_caller() {
    let (mut call, inv, t0) = answered();
    let bye = from_callee(&inv[0], "BYE", 1);
    let leg = call.leg_of(DialogRef::of_request(&bye).unwrap());
    assert_eq!(leg, Some(Leg::Callee));
    let t = t0 + Duration::from_secs(60);
    call.on_request(Leg::Callee, 7, &bye, t);
    let a = drain(&mut call);
    assert!(matches!(&a[0], Action::Respond { tx: 7, response } if response.status() == Some(200)));
    match &a[1] {
        Action::Request { request, .. } => {
            let m = &request.message;
            assert_eq!(m.method(), Some(&Method::Bye));
            assert_eq!(m.uri().unwrap().to_string(), "sip:alice@10.0.0.1:5060");
            assert_eq!(m.call_id(), Some("call-a@10.0.0.1"));
            assert_eq!(m.to().unwrap().tag(), Some("a-tag"));
        }
        other => panic!("expected BYE to the caller, got {other:?}"),
    }
    assert!(matches!(a.last(), Some(Action::Ended)));
    let s = call.summary();
    assert_eq!(s.cause, "callee");
    assert_eq!(s.ended, Some(t));
    assert_eq!(s.outcome, Outcome::Answered);
}

#[test]
fn bye_from_the_caller_hangs_up_the_callee() {
    let (mut call, inv, t0) = answered();
    let bye = from_caller(&call, "BYE", 2, None);
    assert_eq!(
        call.leg_of(DialogRef::of_request(&bye).unwrap()),
        Some(Leg::Caller)
    );
    call.on_request(Leg::Caller, 3, &bye, t0);
    let a = drain(&mut call);
    match &a[1] {
        Action::Request { request, .. } => {
            assert_eq!(request.message.method(), Some(&Method::Bye));
            assert_eq!(request.message.call_id(), inv[0].call_id());
            assert_eq!(request.message.cseq().unwrap().seq, 2);
        }
        other => panic!("expected BYE to the callee, got {other:?}"),
    }
    assert_eq!(call.summary().cause, "caller");
    // Branch 1 was cancelled when branch 0 answered; the call is done once its 487 is in.
    assert!(!call.is_finished());
    call.on_invite_response(1, &answer(&inv[1], 487, "b1", None), t0);
    assert!(call.is_finished());
}

/// The request among `actions` (a call's BYE to the callee): its key and message.
fn request_sent(actions: &[Action]) -> (Key, Message) {
    actions
        .iter()
        .find_map(|x| match x {
            Action::Request { key, request, .. } => Some((*key, request.message.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no request among {actions:?}"))
}

#[test]
fn a_released_call_still_takes_the_answer_to_its_bye() {
    let (mut call, inv, t0) = answered();
    let bye = from_caller(&call, "BYE", 2, None);
    call.on_request(Leg::Caller, 3, &bye, t0);
    let (key, sent) = request_sent(&drain(&mut call));
    // Released too early, nothing is let go.
    call.release();
    call.on_invite_response(1, &answer(&inv[1], 487, "b1", None), t0);
    assert!(call.is_finished());
    let before = call.summary();
    call.release();
    let mut ok = Message::response_to(&sent, 200, "OK");
    ok.set_to_tag("b0").unwrap();
    call.on_response(key, &ok, t0);
    assert!(
        drain(&mut call)
            .iter()
            .all(|x| !matches!(x, Action::Request { .. })),
        "nothing is sent again"
    );
    let after = call.summary();
    assert_eq!(
        (after.outcome, after.cause, after.answered_by),
        (before.outcome, before.cause, before.answered_by)
    );
}

#[test]
fn a_finished_call_is_settled_only_once_its_bye_is_answered() {
    let (mut call, inv, t0) = answered();
    assert!(!call.is_settled(), "answered");
    let bye = from_caller(&call, "BYE", 2, None);
    call.on_request(Leg::Caller, 3, &bye, t0);
    let (key, sent) = request_sent(&drain(&mut call));
    call.on_invite_response(1, &answer(&inv[1], 487, "b1", None), t0);
    assert!(call.is_finished());
    // Our BYE may still be challenged (a trunk) and need sending again: not settled yet.
    assert!(!call.is_settled(), "the BYE to the callee is unanswered");
    let mut ok = Message::response_to(&sent, 200, "OK");
    ok.set_to_tag("b0").unwrap();
    call.on_response(key, &ok, t0);
    drain(&mut call);
    assert!(call.is_settled());
}

/// The one request `actions` send to the callee's leg: its key and message.
fn relayed(actions: &[Action]) -> (Key, Message) {
    match actions {
        [Action::Request {
            key,
            towards: Towards::Branch(0),
            request,
        }] => (*key, request.message.clone()),
        other => panic!("expected one request to the callee, got {other:?}"),
    }
}

/// The callee answers the caller's re-INVITE with a redirect: the caller gets 480, not a 3xx
/// (which would come without its Contact, and point around us).
#[test]
fn a_redirect_of_a_relayed_request_reaches_the_caller_as_480() {
    let (mut call, _inv, t0) = answered();
    let reinvite = from_caller(&call, "INVITE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 11, &reinvite, t0);
    let (key, out) = relayed(&drain(&mut call));
    call.on_response(key, &answer(&out, 302, "b0", None), t0);
    match &drain(&mut call)[..] {
        [Action::Respond { tx: 11, response }] => assert_eq!(response.status(), Some(480)),
        other => panic!("expected 480 to the caller, got {other:?}"),
    }
}

#[test]
fn a_re_invite_is_relayed_and_its_ack_follows() {
    let (mut call, inv, t0) = answered();
    let hold = CALLER_SDP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let reinvite = from_caller(&call, "INVITE", 2, Some(&hold));
    call.on_request(Leg::Caller, 11, &reinvite, t0);
    let (key, out) = relayed(&drain(&mut call));
    assert_eq!(out.method(), Some(&Method::Invite));
    assert_eq!(out.call_id(), inv[0].call_id());
    assert_eq!(out.cseq().unwrap().seq, 2);
    assert_eq!(out.body(), hold.as_bytes());

    let ok = answer(&out, 200, "b0", Some(CALLEE_SDP));
    call.on_response(key, &ok, t0);
    let a = drain(&mut call);
    match &a[..] {
        [Action::Respond { tx: 11, response }] => {
            assert_eq!(response.status(), Some(200));
            assert_eq!(response.body(), CALLEE_SDP.as_bytes());
            assert_eq!(response.cseq().unwrap().seq, 2);
        }
        other => panic!("expected the 200 back to the caller, got {other:?}"),
    }
    call.on_request(Leg::Caller, 0, &from_caller(&call, "ACK", 2, None), t0);
    let a = drain(&mut call);
    match &a[..] {
        [Action::Ack { request, .. }] => {
            assert_eq!(request.message.call_id(), inv[0].call_id());
            assert_eq!(request.message.cseq().unwrap().seq, 2);
        }
        other => panic!("expected the ACK relayed, got {other:?}"),
    }
}

/// The caller gives up on its re-INVITE: the CANCEL goes on to the callee, not before the
/// callee has answered provisionally (§9.1), as the same transaction (branch and CSeq number),
/// and the callee's 487 comes back as the re-INVITE's answer.
#[test]
fn a_cancelled_re_invite_is_cancelled_on_the_other_leg() {
    let (mut call, _inv, t0) = answered();
    let reinvite = from_caller(&call, "INVITE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 11, &reinvite, t0);
    let (key, out) = relayed(&drain(&mut call));
    call.on_cancel(11);
    assert!(
        drain(&mut call).is_empty(),
        "no CANCEL before a provisional answer"
    );
    call.on_response(key, &answer(&out, 100, "b0", None), t0);
    let cancel = match &drain(&mut call)[..] {
        [Action::Request {
            key: cancel_key,
            towards: Towards::Branch(0),
            request,
        }] if *cancel_key != key => request.message.clone(),
        other => panic!("expected the CANCEL towards the callee, got {other:?}"),
    };
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.uri(), out.uri());
    assert_eq!(
        cancel.top_via().and_then(Via::branch),
        out.top_via().and_then(Via::branch)
    );
    assert_eq!(
        cancel.cseq().map(|c| (c.seq, c.method.clone())),
        Some((2, Method::Cancel))
    );
    assert_eq!(
        cancel.to().and_then(|t| t.tag()),
        out.to().and_then(|t| t.tag())
    );

    call.on_response(key, &answer(&out, 487, "b0", None), t0);
    match &drain(&mut call)[..] {
        [Action::Respond { tx: 11, response }] => {
            assert_eq!(response.status(), Some(487));
            assert_eq!(response.cseq().map(|c| c.seq), Some(2));
        }
        other => panic!("expected the 487 back to the caller, got {other:?}"),
    }
    // The call goes on.
    assert!(call.is_answered());
    // A CANCEL for what is no longer pending does nothing.
    call.on_cancel(11);
    assert!(drain(&mut call).is_empty());
}

#[test]
fn a_re_invite_answer_moves_the_target_and_its_ack_keeps_the_re_invites_cseq() {
    let (mut call, _, t0) = answered();
    let reinvite = from_caller(&call, "INVITE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 11, &reinvite, t0);
    let (key, out) = match &drain(&mut call)[..] {
        [Action::Request { key, request, .. }] => (*key, request.message.clone()),
        other => panic!("{other:?}"),
    };
    // An INFO overtakes the re-INVITE's answer on the callee's leg.
    call.on_request(Leg::Caller, 12, &from_caller(&call, "INFO", 3, None), t0);
    let info_seq = match &drain(&mut call)[..] {
        [Action::Request { request, .. }] => request.message.cseq().unwrap().seq,
        other => panic!("{other:?}"),
    };
    assert!(info_seq > out.cseq().unwrap().seq);
    // The callee answers from a new address (§12.2.1.2: its Contact is the new target).
    let mut ok = Message::response_to(&out, 200, "OK");
    ok.set_to_tag("b0").unwrap();
    ok.push_header(HeaderName::Contact, "<sip:bob@10.0.1.77:5062>")
        .unwrap();
    ok.set_body(CALLEE_SDP.as_bytes().to_vec(), Some("application/sdp"))
        .unwrap();
    call.on_response(key, &parse(&ok.to_bytes()).unwrap(), t0);
    drain(&mut call);
    call.on_request(Leg::Caller, 0, &from_caller(&call, "ACK", 2, None), t0);
    match &drain(&mut call)[..] {
        [Action::Ack { request, .. }] => {
            assert_eq!(request.message.cseq().unwrap().seq, out.cseq().unwrap().seq);
            assert_eq!(
                request.message.uri().map(|u| u.to_string()),
                Some("sip:bob@10.0.1.77:5062".to_owned())
            );
        }
        other => panic!("expected the ACK relayed, got {other:?}"),
    }
}

#[test]
fn late_offer_the_callees_ack_waits_for_the_callers_answer() {
    let t0 = Instant::now();
    let mut invite = caller_invite();
    invite.set_body(Vec::new(), None).unwrap();
    let mut call = Call::new(invite, "pbx-tag", targets(1), config(), 1, t0).unwrap();
    let inv = invites(&drain(&mut call));
    assert!(inv[0].body().is_empty());
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    let a = drain(&mut call);
    assert!(!a.iter().any(|x| matches!(x, Action::Ack { .. })), "{a:?}");
    assert_eq!(ok_to_caller(&a).body(), CALLEE_SDP.as_bytes());
    // The caller's answer comes in its ACK and goes on in ours, with the INVITE's CSeq.
    let ack = from_caller(&call, "ACK", 1, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 0, &ack, t0);
    match &drain(&mut call)[..] {
        [Action::Ack { towards, request }] => {
            assert_eq!(*towards, Towards::Branch(0));
            assert_eq!(request.message.body(), CALLER_SDP.as_bytes());
            assert_eq!(
                request.message.cseq().unwrap().seq,
                inv[0].cseq().unwrap().seq
            );
        }
        other => panic!("expected the ACK with the answer, got {other:?}"),
    }
}

#[test]
fn an_out_of_order_request_gets_500_and_a_vanished_leg_ends_the_call() {
    let (mut call, _, t0) = answered();
    let info = from_caller(&call, "INFO", 5, None);
    call.on_request(Leg::Caller, 1, &info, t0);
    let relayed = drain(&mut call);
    let key = match &relayed[..] {
        [Action::Request { key, .. }] => *key,
        other => panic!("{other:?}"),
    };
    let old = from_caller(&call, "INFO", 4, None);
    call.on_request(Leg::Caller, 2, &old, t0);
    let a = drain(&mut call);
    assert!(
        matches!(&a[..], [Action::Respond { tx: 2, response }] if response.status() == Some(500))
    );

    // The callee never answers the INFO: the caller gets 408, the call ends with a BYE to it.
    call.on_request_timeout(key, t0 + Duration::from_secs(32));
    let a = drain(&mut call);
    assert!(matches!(&a[0], Action::Respond { tx: 1, response } if response.status() == Some(408)));
    assert!(
        matches!(&a[1], Action::Request { request, .. } if request.message.method() == Some(&Method::Bye))
    );
    assert!(matches!(a.last(), Some(Action::Ended)));
    assert_eq!(call.summary().cause, "timeout");
}

#[test]
fn a_bye_from_the_caller_while_ringing_ends_the_attempt() {
    let (mut call, _, t0) = started(2);
    let bye = from_caller(&call, "BYE", 2, None);
    call.on_request(Leg::Caller, 9, &bye, t0);
    let a = drain(&mut call);
    assert!(a.iter().any(
        |x| matches!(x, Action::Respond { tx: 9, response } if response.status() == Some(200))
    ));
    assert_eq!(cancels(&a).len(), 2);
    assert_eq!(caller_answers(&a), vec![487]);
    assert_eq!(call.summary().outcome, Outcome::Cancelled);
}

#[test]
fn requests_before_the_answer_are_refused_not_lost() {
    let (mut call, _, t0) = started(1);
    let update = from_caller(&call, "UPDATE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 9, &update, t0);
    let a = drain(&mut call);
    assert!(
        matches!(&a[..], [Action::Respond { tx: 9, response }] if response.status() == Some(491))
    );
}

/// The caller's INVITE asking for session timers.
fn invite_with_timer(se: u32, supported: bool) -> Message {
    let extra = if supported {
        format!("Session-Expires: {se}\r\nSupported: timer\r\n")
    } else {
        format!("Session-Expires: {se}\r\n")
    };
    let text = String::from_utf8(caller_invite().to_bytes()).unwrap();
    parse(
        text.replacen(
            "CSeq: 1 INVITE\r\n",
            &format!("CSeq: 1 INVITE\r\n{extra}"),
            1,
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A one-target call from `invite`, started at `start` and answered (200 with SDP) at `at`;
/// with the 200 the caller got.
fn answered_at(invite: Message, start: Instant, at: Instant) -> (Call, Message) {
    let mut call = Call::new(invite, "pbx-tag", targets(1), config(), 5, start).unwrap();
    let inv = invites(&drain(&mut call));
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), at);
    let ok = ok_to_caller(&drain(&mut call));
    (call, ok)
}

/// A 120 s session-timer INVITE naming us the refresher (`refresher=uas`), with `extra` header
/// lines.
fn invite_naming_us_refresher(extra: &str) -> Message {
    let text = String::from_utf8(invite_with_timer(120, true).to_bytes()).unwrap();
    let text = text.replacen(
        "Session-Expires: 120\r\n",
        &format!("Session-Expires: 120;refresher=uas\r\n{extra}"),
        1,
    );
    parse(text.as_bytes()).unwrap()
}

/// How many of `actions` are BYEs the call sends.
fn byes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|x| matches!(x, Action::Request { request, .. } if request.message.method() == Some(&Method::Bye)))
        .count()
}

#[test]
fn session_timer_is_agreed_refreshed_and_enforced() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let (mut call, ok) = answered_at(invite_with_timer(1800, true), t0, t1);
    assert_eq!(
        ok.header(&HeaderName::SessionExpires),
        Some("1800;refresher=uac")
    );
    assert_eq!(ok.header(&HeaderName::Require), Some("timer"));
    // BYE 32 s before the interval ends if nobody refreshes.
    assert_eq!(call.poll_timeout(), Some(t1 + Duration::from_secs(1768)));

    // A refresh (UPDATE) from the caller moves the deadline and its 2xx says so again.
    let t2 = t1 + Duration::from_secs(900);
    let update = from_caller(&call, "UPDATE", 2, None);
    call.on_request(Leg::Caller, 4, &update, t2);
    let key = match &drain(&mut call)[..] {
        [Action::Request { key, .. }] => *key,
        other => panic!("{other:?}"),
    };
    assert_eq!(call.poll_timeout(), Some(t2 + Duration::from_secs(1768)));
    let relayed = Message::response_to(&update, 200, "OK");
    call.on_response(key, &relayed, t2);
    match &drain(&mut call)[..] {
        [Action::Respond { response, .. }] => {
            assert_eq!(
                response.header(&HeaderName::SessionExpires),
                Some("1800;refresher=uac")
            );
        }
        other => panic!("{other:?}"),
    }

    // No further refresh: both legs get BYE when the deadline passes.
    call.handle_timeout(t2 + Duration::from_secs(1767));
    assert!(drain(&mut call).is_empty());
    let end = t2 + Duration::from_secs(1768);
    call.handle_timeout(end);
    assert_eq!(byes(&drain(&mut call)), 2);
    assert_eq!(call.summary().cause, "session_timer");
}

/// The caller names us the refresher (`refresher=uas`, RFC 4028 §9 table 2): the 200 says so,
/// and half-way through each interval we refresh: with UPDATE when the caller allows it, else
/// with a re-INVITE offering the description it has (whose 2xx we ACK). A refresh that finds
/// the caller's dialog gone ends the call.
#[test]
fn when_the_caller_names_us_the_refresher_we_refresh() {
    for update in [true, false] {
        let allow = if update {
            "Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n"
        } else {
            "Allow: INVITE, ACK, BYE, CANCEL\r\n"
        };
        let t0 = Instant::now();
        let (mut call, ok) = answered_at(invite_naming_us_refresher(allow), t0, t0);
        assert_eq!(
            ok.header(&HeaderName::SessionExpires),
            Some("120;refresher=uas")
        );
        assert_eq!(call.poll_timeout(), Some(t0 + Duration::from_secs(60)));

        let t1 = t0 + Duration::from_secs(60);
        call.handle_timeout(t1);
        let (key, refresh) = match &drain(&mut call)[..] {
            [Action::Request {
                key,
                towards: Towards::Caller,
                request,
            }] => (*key, request.message.clone()),
            other => panic!("expected our refresh, got {other:?}"),
        };
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        assert_eq!(refresh.method(), Some(&method));
        // In our request we are the UAC: `uac` names us.
        assert_eq!(
            refresh.header(&HeaderName::SessionExpires),
            Some("120;refresher=uac")
        );
        assert_eq!(refresh.call_id(), ok.call_id());
        if update {
            assert!(refresh.body().is_empty());
        } else {
            assert_eq!(
                refresh.body(),
                CALLEE_SDP.as_bytes(),
                "the description again"
            );
        }
        let mut answered = Message::response_to(&refresh, 200, "OK");
        let _ = answered.push_header(HeaderName::SessionExpires, "120;refresher=uac");
        call.on_response(key, &answered, t1);
        let a = drain(&mut call);
        if update {
            assert!(a.is_empty(), "{a:?}");
        } else {
            match &a[..] {
                [Action::Ack {
                    towards: Towards::Caller,
                    request,
                }] => {
                    let cseq = request.message.cseq().unwrap();
                    assert_eq!(cseq.method, Method::Ack);
                    assert_eq!(Some(cseq.seq), refresh.cseq().map(|c| c.seq));
                }
                other => panic!("expected the ACK of our re-INVITE's 200, got {other:?}"),
            }
        }
        // The next refresh half an interval later; the session is not given up meanwhile.
        assert_eq!(call.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        let t2 = t1 + Duration::from_secs(60);
        call.handle_timeout(t2);
        let key = match &drain(&mut call)[..] {
            [Action::Request { key, .. }] => *key,
            other => panic!("expected the second refresh, got {other:?}"),
        };
        call.on_response(key, &Message::response_to(&refresh, 481, "Gone"), t2);
        assert_eq!(byes(&drain(&mut call)), 2);
        assert_eq!(call.summary().cause, "session_timer");
    }
}

/// The caller's answer to our refresh re-INVITE carries its description (RFC 3264: an answer
/// to our offer), perhaps with a new address: the driver is told, for the relay, besides the
/// ACK.
#[test]
fn the_callers_answer_to_our_refresh_reaches_the_relay() {
    let t0 = Instant::now();
    let (mut call, _ok) = answered_at(invite_naming_us_refresher(""), t0, t0);
    let t1 = t0 + Duration::from_secs(60);
    call.handle_timeout(t1);
    let (key, refresh) = match &drain(&mut call)[..] {
        [Action::Request { key, request, .. }] => (*key, request.message.clone()),
        other => panic!("expected our refresh, got {other:?}"),
    };
    assert_eq!(refresh.method(), Some(&Method::Invite));
    let moved = CALLER_SDP.replace("10.0.0.1", "10.0.0.9");
    let mut answered = Message::response_to(&refresh, 200, "OK");
    let _ = answered.set_body(moved.clone().into_bytes(), Some("application/sdp"));
    call.on_response(key, &answered, t1);
    match &drain(&mut call)[..] {
        [Action::Ack { .. }, Action::CallerDescribed(answer)] => {
            assert_eq!(answer.body(), moved.as_bytes());
        }
        other => panic!("expected the ACK and the caller's description, got {other:?}"),
    }
}

/// Our refresh by re-INVITE waits while another INVITE is under way on the dialog (RFC 3261
/// §14.1): here the caller's own re-INVITE, relayed and not answered yet.
#[test]
fn our_refresh_by_re_invite_waits_for_an_invite_under_way() {
    let t0 = Instant::now();
    let (mut call, _ok) = answered_at(invite_naming_us_refresher(""), t0, t0);
    // The re-INVITE carries no Session-Expires: roles and interval stay.
    let reinvite = from_caller(&call, "INVITE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 11, &reinvite, t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut call).len(), 1, "relayed");
    let due = t0 + Duration::from_secs(61);
    call.handle_timeout(due);
    assert!(
        drain(&mut call).is_empty(),
        "no second INVITE on the dialog"
    );
    assert_eq!(call.poll_timeout(), Some(due + REFRESH_RETRY));
}

/// Who refreshes is settled again by each refresh (RFC 4028 table 2): the caller that named us
/// takes the refreshing back with `refresher=uac` in its UPDATE, and we stop.
#[test]
fn a_refresh_from_the_caller_can_take_the_refreshing_back() {
    let t0 = Instant::now();
    let (mut call, ok) = answered_at(invite_naming_us_refresher(""), t0, t0);
    assert_eq!(
        ok.header(&HeaderName::SessionExpires),
        Some("120;refresher=uas")
    );
    let t1 = t0 + Duration::from_secs(30);
    let mut update = from_caller(&call, "UPDATE", 2, None);
    let _ = update.push_header(HeaderName::SessionExpires, "120;refresher=uac");
    call.on_request(Leg::Caller, 4, &update, t1);
    let key = match &drain(&mut call)[..] {
        [Action::Request { key, .. }] => *key,
        other => panic!("{other:?}"),
    };
    call.on_response(key, &Message::response_to(&update, 200, "OK"), t1);
    match &drain(&mut call)[..] {
        [Action::Respond { response, .. }] => assert_eq!(
            response.header(&HeaderName::SessionExpires),
            Some("120;refresher=uac")
        ),
        other => panic!("{other:?}"),
    }
    // No refresh of ours any more: only the caller's deadline (120 - 32 s).
    assert_eq!(call.poll_timeout(), Some(t1 + Duration::from_secs(88)));
}

#[test]
fn too_short_a_session_interval_gets_422_with_min_se() {
    let mut call = Call::new(
        invite_with_timer(60, true),
        "pbx-tag",
        targets(2),
        config(),
        5,
        Instant::now(),
    )
    .unwrap();
    let a = drain(&mut call);
    assert!(invites(&a).is_empty(), "nobody rings");
    let rsp = a
        .iter()
        .find_map(|x| match x {
            Action::AnswerCaller(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(rsp.status(), Some(422));
    assert_eq!(rsp.header(&HeaderName::MinSE), Some("90"));
    assert!(call.is_finished());
}

#[test]
fn no_session_timer_unless_the_caller_supports_it() {
    let t0 = Instant::now();
    let (call, ok) = answered_at(invite_with_timer(1800, false), t0, t0);
    assert_eq!(ok.header(&HeaderName::SessionExpires), None);
    assert_eq!(call.poll_timeout(), None);
}

/// A trunk branch: its own From, and a 407 answered once with the trunk's credentials.
#[test]
fn a_trunk_branch_answers_one_challenge_with_its_credentials() {
    use crate::sip::auth::DigestServer;
    let t0 = Instant::now();
    let trunk = trunk_target(Some(
        NameAddr::parse("\"Alice Smith\" <sip:+4930555100@itsp.test>").unwrap(),
    ));
    let mut call = Call::new(caller_invite(), "pbx-tag", vec![trunk], config(), 9, t0).unwrap();
    let first = invites(&drain(&mut call)).remove(0);
    assert_eq!(
        first.from().unwrap().uri.to_string(),
        "sip:+4930555100@itsp.test"
    );
    assert_eq!(
        first.to().unwrap().uri.to_string(),
        "sip:0301234567@itsp.test"
    );

    let mut itsp = DigestServer::new(b"0123456789abcdef0123456789abcdef");
    let mut challenge = answer(&first, 407, "itsp", None);
    for v in itsp.challenge("itsp.test", false, 1_000) {
        challenge
            .push_header(HeaderName::ProxyAuthenticate, &v)
            .unwrap();
    }
    call.on_invite_response(0, &challenge, t0);
    let a = drain(&mut call);
    assert!(
        caller_answers(&a).is_empty(),
        "the caller sees nothing of the challenge"
    );
    let second = invites(&a).remove(0);
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.from(), first.from());
    assert_eq!(second.cseq().unwrap().seq, 2);
    assert_ne!(
        second.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_eq!(second.body(), first.body());
    assert_itsp_accepts(&mut itsp, &second, HeaderName::ProxyAuthorization, 1_001);

    // A second challenge means the credentials were refused: the call fails, no third INVITE.
    let mut again = answer(&second, 407, "itsp", None);
    for v in itsp.challenge("itsp.test", false, 1_002) {
        again
            .push_header(HeaderName::ProxyAuthenticate, &v)
            .unwrap();
    }
    call.on_invite_response(0, &again, t0);
    let a = drain(&mut call);
    assert!(invites(&a).is_empty());
    assert_eq!(caller_answers(&a), vec![503]);
    assert_eq!(call.summary().outcome, Outcome::Failed);
}

/// A branch to an ITSP whose account is acct / pw.
fn trunk_target(from: Option<NameAddr>) -> Target {
    Target {
        uri: Uri::parse("sip:0301234567@itsp.test").unwrap(),
        label: "+49301234567".into(),
        from,
        credentials: Some(std::sync::Arc::new(BranchCredentials {
            username: "acct".into(),
            password: "pw".into(),
        })),
        contact: None,
        offers_100rel: false,
        forwarded_as: None,
    }
}

/// A call answered by the ITSP of [`trunk_target`].
fn answered_by_trunk(t0: Instant) -> Call {
    let trunk = trunk_target(None);
    let mut call = Call::new(caller_invite(), "pbx-tag", vec![trunk], config(), 9, t0).unwrap();
    let inv = invites(&drain(&mut call)).remove(0);
    call.on_invite_response(0, &answer(&inv, 200, "itsp", Some(CALLEE_SDP)), t0);
    drain(&mut call);
    call
}

/// `itsp`'s challenge to `request`: a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`)
/// for realm itsp.test, as parsed off the wire.
fn itsp_challenge(
    itsp: &mut crate::sip::auth::DigestServer,
    request: &Message,
    status: u16,
    now: u64,
) -> Message {
    let header = if status == 401 {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    let mut rsp = Message::response_to(request, status, message::reason_phrase(status));
    for v in itsp.challenge("itsp.test", false, now) {
        rsp.push_header(header.clone(), &v).unwrap();
    }
    parse(&rsp.to_bytes()).unwrap()
}

/// `request` carries credentials in `header` that `itsp` accepts for the account acct / pw.
fn assert_itsp_accepts(
    itsp: &mut crate::sip::auth::DigestServer,
    request: &Message,
    header: HeaderName,
    now: u64,
) {
    use crate::sip::auth::{self, Verdict};
    let creds = request
        .credentials(&header)
        .find_map(Result::ok)
        .unwrap_or_else(|| panic!("no {header} in {request}"));
    let method = request.method().expect("a request").as_str();
    let v = itsp.verify(
        &creds,
        method,
        |alg| Some(auth::ha1(alg, "acct", "itsp.test", "pw")),
        "itsp.test",
        now,
    );
    assert_eq!(v, Verdict::Ok, "{request}");
}

/// An ITSP that authenticates our BYE too: the BYE goes again with the trunk's credentials,
/// once; a second challenge is not answered.
#[test]
fn a_trunk_challenging_our_bye_gets_it_again_with_credentials() {
    use crate::sip::auth::DigestServer;
    let t0 = Instant::now();
    let mut call = answered_by_trunk(t0);
    // The caller hangs up: we BYE the trunk's leg.
    call.on_request(Leg::Caller, 1, &from_caller(&call, "BYE", 2, None), t0);
    let bye = |a: &[Action]| {
        a.iter().find_map(|x| match x {
            Action::Request {
                key,
                towards: Towards::Branch(0),
                request,
            } if request.message.method() == Some(&Method::Bye) => {
                Some((*key, request.message.clone()))
            }
            _ => None,
        })
    };
    let (key, first) = bye(&drain(&mut call)).expect("a BYE to the trunk");
    let mut itsp = DigestServer::new(b"0123456789abcdef0123456789abcdef");
    let challenge = itsp_challenge(&mut itsp, &first, 401, 1_000);
    call.on_response(key, &challenge, t0);
    let (key, second) = bye(&drain(&mut call)).expect("the BYE again");
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
    assert_ne!(
        second.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_itsp_accepts(&mut itsp, &second, HeaderName::Authorization, 1_001);
    // Refused again: no third BYE.
    let again = itsp_challenge(&mut itsp, &second, 401, 1_002);
    call.on_response(key, &again, t0);
    assert!(bye(&drain(&mut call)).is_none());
}

/// A phone that answers 401/407 (it has no credentials from us) is just a failed branch.
#[test]
fn a_phone_branch_does_not_answer_challenges() {
    let (mut call, inv, t0) = started(1);
    call.on_invite_response(0, &answer(&inv[0], 401, "b0", None), t0);
    let a = drain(&mut call);
    assert!(invites(&a).is_empty());
    assert_eq!(caller_answers(&a), vec![503]);
}

/// The echo test: the PBX answers at once with its own description; a re-INVITE gets it again,
/// INFO a 200, REFER a 403; the caller's BYE ends the call with nothing sent anywhere else.
#[test]
fn a_call_answered_here_has_no_callee_leg() {
    let t0 = Instant::now();
    let ours = b"v=0\r\no=pbx 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n".to_vec();
    let mut call =
        Call::answer_here(caller_invite(), "pbx-tag", ours.clone(), config(), 3, t0).unwrap();
    let a = drain(&mut call);
    let ok = ok_to_caller(&a);
    assert_eq!(ok.body(), &ours[..]);
    assert_eq!(a.len(), 1, "no INVITE to anyone: {a:?}");
    assert!(call.is_answered());
    assert_eq!(call.summary().outcome, Outcome::Answered);

    let hold = CALLER_SDP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let reinvite = from_caller(&call, "INVITE", 2, Some(&hold));
    call.on_request(Leg::Caller, 7, &reinvite, t0);
    match &drain(&mut call)[..] {
        [Action::Respond { tx: 7, response }] => {
            assert_eq!(response.status(), Some(200));
            assert_eq!(response.body(), &ours[..]);
        }
        other => panic!("expected our 200, got {other:?}"),
    }
    let info = from_caller(&call, "INFO", 3, None);
    call.on_request(Leg::Caller, 8, &info, t0);
    assert!(
        matches!(&drain(&mut call)[..], [Action::Respond { tx: 8, response }] if response.status() == Some(200))
    );
    let refer = from_caller(&call, "REFER", 4, None);
    call.on_request(Leg::Caller, 9, &refer, t0);
    assert!(
        matches!(&drain(&mut call)[..], [Action::Respond { tx: 9, response }] if response.status() == Some(403))
    );

    let bye = from_caller(&call, "BYE", 5, None);
    call.on_request(Leg::Caller, 10, &bye, t0);
    let a = drain(&mut call);
    assert!(
        a.iter()
            .all(|x| matches!(x, Action::Respond { .. } | Action::Ended)),
        "{a:?}"
    );
    assert!(a.iter().any(|x| matches!(x, Action::Ended)));
    assert_eq!(call.summary().cause, "caller");
    assert!(call.is_finished());
}

/// The caller's INVITE, requiring reliable provisionals (RFC 3262).
fn invite_requiring_100rel() -> Message {
    let text = String::from_utf8(caller_invite().to_bytes()).unwrap();
    parse(
        text.replacen(
            "CSeq: 1 INVITE\r\n",
            "CSeq: 1 INVITE\r\nRequire: 100rel\r\n",
            1,
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A PRACK from the caller for `rseq`.
fn prack(call: &Call, cseq: u32, rseq: &str) -> Message {
    let text = String::from_utf8(from_caller(call, "PRACK", cseq, None).to_bytes()).unwrap();
    let text = text.replacen(
        "Content-Length: 0\r\n",
        &format!("RAck: {rseq} 1 INVITE\r\nContent-Length: 0\r\n"),
        1,
    );
    parse(text.as_bytes()).unwrap()
}

/// A call from a caller that requires 100rel, ringing one phone longer than 64·T1, and the
/// INVITE to that phone.
fn reliable_call(t0: Instant) -> (Call, Vec<Message>) {
    let config = CallConfig {
        no_answer: Duration::from_secs(60),
        ..config()
    };
    let mut call = Call::new(
        invite_requiring_100rel(),
        "pbx-tag",
        targets(1),
        config,
        5,
        t0,
    )
    .unwrap();
    let inv = invites(&drain(&mut call));
    (call, inv)
}

/// To a caller that requires it, provisionals go reliably (Require: 100rel, RSeq), one at a
/// time and repeated until PRACKed; the PRACK gets 200 and lets the next one go; a PRACK for
/// something else gets 481; a 2xx waits for the PRACK of a provisional with a session
/// description (RFC 3262 §3).
#[test]
fn provisionals_to_a_caller_that_requires_100rel_are_reliable() {
    let t0 = Instant::now();
    let (mut call, inv) = reliable_call(t0);
    call.on_invite_response(0, &answer(&inv[0], 180, "b0", None), t0);
    let a = drain(&mut call);
    let ringing = match &a[..] {
        [Action::AnswerCaller(m)] => m.clone(),
        other => panic!("expected the 180, got {other:?}"),
    };
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(ringing.header(&HeaderName::Require), Some("100rel"));
    let rseq = ringing.header(&HeaderName::RSeq).unwrap().to_owned();
    // Early media while the 180 is unacknowledged waits its turn.
    call.on_invite_response(0, &answer(&inv[0], 183, "b0", Some(CALLEE_SDP)), t0);
    assert!(drain(&mut call).is_empty());
    // Not PRACKed: repeated after T1, then 2·T1.
    assert_eq!(call.poll_timeout(), Some(t0 + T1));
    call.handle_timeout(t0 + T1);
    assert_eq!(caller_answers(&drain(&mut call)), [180]);
    assert_eq!(call.poll_timeout(), Some(t0 + T1 * 3));
    // A PRACK for another RSeq: 481, nothing moves.
    call.on_request(Leg::Caller, 1, &prack(&call, 2, "1"), t0 + T1);
    match &drain(&mut call)[..] {
        [Action::Respond { response, .. }] => assert_eq!(response.status(), Some(481)),
        other => panic!("expected 481, got {other:?}"),
    }
    // The PRACK: 200, and the 183 goes (reliably, the next RSeq).
    call.on_request(Leg::Caller, 2, &prack(&call, 3, &rseq), t0 + T1);
    let a = drain(&mut call);
    let early = match &a[..] {
        [Action::Respond { response, .. }, Action::AnswerCaller(m)] => {
            assert_eq!(response.status(), Some(200));
            m.clone()
        }
        other => panic!("expected 200 to the PRACK and the 183, got {other:?}"),
    };
    assert_eq!(early.status(), Some(183));
    let next: u32 = rseq.parse::<u32>().unwrap() + 1;
    assert_eq!(
        early.header(&HeaderName::RSeq),
        Some(next.to_string().as_str())
    );
    // The callee answers: the 200 waits for the 183's PRACK (it carried a description).
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0 + T1);
    assert!(caller_answers(&drain(&mut call)).is_empty());
    call.on_request(Leg::Caller, 3, &prack(&call, 4, &next.to_string()), t0 + T1);
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), [200]);
    assert!(call.is_answered());
}

/// No PRACK for 64·T1: the caller's INVITE fails with a 5xx and the branches are cancelled.
#[test]
fn an_unacknowledged_reliable_provisional_fails_the_call() {
    let t0 = Instant::now();
    let (mut call, inv) = reliable_call(t0);
    call.on_invite_response(0, &answer(&inv[0], 180, "b0", None), t0);
    drain(&mut call);
    let mut now = t0;
    while let Some(t) = call.poll_timeout() {
        if t > t0 + 64 * T1 {
            break;
        }
        now = t;
        call.handle_timeout(now);
        let a = drain(&mut call);
        if caller_answers(&a).contains(&500) {
            assert!(a.iter().any(|x| matches!(x, Action::Cancel { .. })));
            assert_eq!(now, t0 + 64 * T1);
            assert_eq!(call.summary().cause, "no_prack");
            return;
        }
    }
    panic!("no 500 by {now:?}");
}

/// A call with a caller that requires 100rel, its 183 (with SDP) sent reliably and not
/// PRACKed, and the callee's 200 held behind it.
fn answer_held_behind_a_prack() -> (Call, Vec<Message>, Instant, String) {
    let t0 = Instant::now();
    let (mut call, inv) = reliable_call(t0);
    call.on_invite_response(0, &answer(&inv[0], 183, "b0", Some(CALLEE_SDP)), t0);
    let rseq = match &drain(&mut call)[..] {
        [Action::AnswerCaller(m)] => m.header(&HeaderName::RSeq).unwrap().to_owned(),
        other => panic!("expected the 183, got {other:?}"),
    };
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    assert!(
        caller_answers(&drain(&mut call)).is_empty(),
        "the 200 waits"
    );
    (call, inv, t0, rseq)
}

/// The caller hangs up (BYE on the early dialog) while the callee's 200 waits for its PRACK:
/// the INVITE gets 487 (§15.1.2) and the callee, which answered, a BYE.
#[test]
fn a_bye_while_the_answer_waits_for_a_prack_ends_both() {
    let (mut call, inv, t0, _) = answer_held_behind_a_prack();
    call.on_request(Leg::Caller, 1, &from_caller(&call, "BYE", 3, None), t0);
    let a = drain(&mut call);
    assert_eq!(caller_answers(&a), [487]);
    assert!(a.iter().any(|x| matches!(x,
        Action::Request { request, .. }
            if request.message.method() == Some(&Method::Bye)
                && request.message.call_id() == inv[0].call_id())));
    assert!(
        call.poll_timeout().is_none_or(|t| t > t0 + T1 * 64),
        "no more repeating"
    );
}

/// No PRACK while the callee's 200 waits: 5xx to the caller, BYE to the callee.
#[test]
fn no_prack_while_the_answer_waits_hangs_up_the_callee() {
    let (mut call, inv, t0, _) = answer_held_behind_a_prack();
    let until = t0 + T1 * 64;
    let mut all = Vec::new();
    while let Some(t) = call.poll_timeout().filter(|t| *t <= until) {
        call.handle_timeout(t);
        all.extend(drain(&mut call));
    }
    assert!(caller_answers(&all).contains(&500), "{all:?}");
    assert!(all.iter().any(|x| matches!(x,
        Action::Request { request, .. }
            if request.message.method() == Some(&Method::Bye)
                && request.message.call_id() == inv[0].call_id())));
}

/// A PRACK for a provisional the 2xx overtook (one without SDP) still gets 200 (§3).
#[test]
fn a_prack_after_the_answer_still_gets_200() {
    let t0 = Instant::now();
    let (mut call, inv) = reliable_call(t0);
    call.on_invite_response(0, &answer(&inv[0], 180, "b0", None), t0);
    let rseq = match &drain(&mut call)[..] {
        [Action::AnswerCaller(m)] => m.header(&HeaderName::RSeq).unwrap().to_owned(),
        other => panic!("expected the 180, got {other:?}"),
    };
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    assert_eq!(caller_answers(&drain(&mut call)), [200]);
    call.on_request(Leg::Caller, 1, &prack(&call, 3, &rseq), t0);
    match &drain(&mut call)[..] {
        [Action::Respond { response, .. }] => assert_eq!(response.status(), Some(200)),
        other => panic!("expected 200 to the PRACK, got {other:?}"),
    }
    // One never sent: 481.
    let other = (rseq.parse::<u32>().unwrap() + 5).to_string();
    call.on_request(Leg::Caller, 2, &prack(&call, 4, &other), t0);
    match &drain(&mut call)[..] {
        [Action::Respond { response, .. }] => assert_eq!(response.status(), Some(481)),
        other => panic!("expected 481, got {other:?}"),
    }
}

const CAROL_SDP: &str = "v=0\r\no=carol 3 3 IN IP4 10.0.3.1\r\ns=-\r\nc=IN IP4 10.0.3.1\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// Carol's INVITE with `Replaces` (already matched to a leg by the driver).
fn replacing_invite() -> Message {
    with_body(
        "INVITE sip:200@pbx.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.3.1:5060;branch=z9hG4bK-r1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@pbx.example>;tag=c-tag\r\n\
         To: <sip:200@pbx.example>\r\n\
         Call-ID: call-c@10.0.3.1\r\n\
         CSeq: 7 INVITE\r\n\
         Contact: <sip:carol@10.0.3.1:5060>\r\n\
         Replaces: call-a@10.0.0.1;to-tag=pbx-tag;from-tag=a-tag\r\n",
        CAROL_SDP,
    )
}

/// The first request of `actions` towards `to`, with its key.
fn request_to(actions: &[Action], to: Towards) -> (Key, Message) {
    actions
        .iter()
        .find_map(|x| match x {
            Action::Request {
                key,
                towards,
                request,
            } if *towards == to => Some((*key, request.message.clone())),
            _ => None,
        })
        .expect("a request there")
}

fn requests(actions: &[Action]) -> Vec<(Towards, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                towards, request, ..
            } => Some((*towards, request.message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_phone_replacing_the_caller_takes_its_place() {
    let (mut call, inv, t0) = answered();
    let carol = replacing_invite();
    call.replace(Leg::Caller, 50, &carol, "new-tag", false, t0)
        .unwrap();
    let a = drain(&mut call);
    let sent = requests(&a);
    // First the BYE to alice (while `Caller` still means her), then the switch, then the
    // re-INVITE with carol's session to bob.
    assert_eq!(sent[0].0, Towards::Caller);
    assert_eq!(sent[0].1.method(), Some(&Method::Bye));
    assert_eq!(sent[0].1.call_id(), Some("call-a@10.0.0.1"));
    let switch = a
        .iter()
        .position(|x| {
            matches!(
                x,
                Action::LegReplaced {
                    towards: Towards::Caller
                }
            )
        })
        .expect("the switch");
    let reinvite_at = a
        .iter()
        .position(|x| {
            matches!(
                x,
                Action::Request {
                    towards: Towards::Branch(0),
                    ..
                }
            )
        })
        .expect("the re-INVITE");
    assert!(switch < reinvite_at);
    let reinvite = &sent[1].1;
    assert_eq!(reinvite.method(), Some(&Method::Invite));
    assert_eq!(reinvite.call_id(), inv[0].call_id());
    assert_eq!(reinvite.body(), CAROL_SDP.as_bytes());
    // Carol's dialog is the caller's now, and indexed.
    let id = call.dialog_id(Leg::Caller).unwrap().clone();
    assert_eq!(
        (id.call_id.as_str(), id.local_tag.as_str()),
        ("call-c@10.0.3.1", "new-tag")
    );
    assert!(call.dialog_ids().any(|d| d.call_id == "call-a@10.0.0.1"));
    // Alice's dialog is no leg any more (the driver answers her requests 481).
    let alices = DialogRef {
        call_id: "call-a@10.0.0.1",
        local_tag: "pbx-tag",
        remote_tag: "a-tag",
    };
    assert_eq!(call.leg_of(alices), None);

    // Bob's 200 answers carol's INVITE: our tag, our Contact, bob's session.
    let key = request_to(&a, Towards::Branch(0)).0;
    let mut ok = Message::response_to(reinvite, 200, "OK");
    ok.set_body(CALLEE_SDP.as_bytes().to_vec(), Some("application/sdp"))
        .unwrap();
    call.on_response(key, &parse(&ok.to_bytes()).unwrap(), t0);
    let a = drain(&mut call);
    let answer = a
        .iter()
        .find_map(|x| match x {
            Action::Respond { tx: 50, response } => Some(response.clone()),
            _ => None,
        })
        .expect("carol's answer");
    assert_eq!(answer.status(), Some(200));
    assert_eq!(answer.to().unwrap().tag(), Some("new-tag"));
    assert_eq!(answer.contacts().len(), 1);
    assert_eq!(answer.body(), CALLEE_SDP.as_bytes());

    // Carol's ACK goes on to bob; her BYE later ends the call there.
    let ack = from_caller(&call, "ACK", 7, None);
    let ack = parse(
        String::from_utf8_lossy(&ack.to_bytes())
            .replace("call-a@10.0.0.1", "call-c@10.0.3.1")
            .replace("tag=a-tag", "tag=c-tag")
            .as_bytes(),
    )
    .unwrap();
    call.on_request(Leg::Caller, 0, &ack, t0);
    assert!(drain(&mut call).iter().any(|x| matches!(
        x,
        Action::Ack {
            towards: Towards::Branch(0),
            ..
        }
    )));
    assert!(call.is_answered());
}

#[test]
fn a_phone_replacing_the_callee_is_reached_as_a_new_branch_with_the_old_label() {
    let (mut call, _inv, t0) = answered();
    let carol = replacing_invite();
    call.replace(Leg::Callee, 51, &carol, "new-tag", false, t0)
        .unwrap();
    let a = drain(&mut call);
    let sent = requests(&a);
    assert_eq!(sent[0].0, Towards::Branch(0));
    assert_eq!(sent[0].1.method(), Some(&Method::Bye));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::LegReplaced {
            towards: Towards::Branch(2)
        }
    )));
    assert_eq!(sent[1].0, Towards::Caller);
    assert_eq!(sent[1].1.method(), Some(&Method::Invite));
    assert_eq!(call.towards(Leg::Callee), Towards::Branch(2));
    assert_eq!(call.summary().answered_by.as_deref(), Some("phone:0"));
}

#[test]
fn the_other_party_refusing_the_replacement_ends_the_call() {
    let (mut call, _inv, t0) = answered();
    call.replace(Leg::Caller, 50, &replacing_invite(), "new-tag", false, t0)
        .unwrap();
    let a = drain(&mut call);
    let (key, reinvite) = request_to(&a, Towards::Branch(0));
    let refused = Message::response_to(&reinvite, 488, "Not Acceptable Here");
    call.on_response(key, &parse(&refused.to_bytes()).unwrap(), t0);
    let a = drain(&mut call);
    assert!(a.iter().any(
        |x| matches!(x, Action::Respond { tx: 50, response } if response.status() == Some(488))
    ));
    let byes: Vec<_> = requests(&a)
        .into_iter()
        .filter(|(_, m)| m.method() == Some(&Method::Bye))
        .collect();
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].0, Towards::Branch(0));
    assert!(matches!(a.last(), Some(Action::Ended)));
    assert_eq!(call.summary().cause, "transfer_failed");
}

#[test]
fn replaces_is_refused_before_the_answer_for_early_only_and_across_a_pending_offer() {
    let (mut call, _inv, t0) = started(1);
    assert_eq!(
        call.replace(Leg::Caller, 1, &replacing_invite(), "t", false, t0),
        Err(ReplaceError::NotConfirmed)
    );
    let (mut call, _inv, t0) = answered();
    assert_eq!(
        call.replace(Leg::Caller, 1, &replacing_invite(), "t", true, t0),
        Err(ReplaceError::EarlyOnly)
    );
    let hold = from_caller(&call, "INVITE", 2, Some(CALLER_SDP));
    call.on_request(Leg::Caller, 3, &hold, t0);
    drain(&mut call);
    assert_eq!(
        call.replace(Leg::Callee, 1, &replacing_invite(), "t", false, t0),
        Err(ReplaceError::Pending)
    );
    assert_eq!(ReplaceError::Pending.status(), 491);
    // Nothing was sent for a refusal.
    assert!(drain(&mut call).is_empty());
}

/// A reliable provisional answer to `invite` (RFC 3262) with `rseq`.
fn reliable(invite: &Message, status: u16, rseq: u32) -> Message {
    let mut r = Message::response_to(invite, status, message::reason_phrase(status));
    r.set_to_tag("b0").unwrap();
    r.push_header(HeaderName::Contact, "<sip:bob@10.0.1.9:5062>")
        .unwrap();
    r.push_header(HeaderName::Require, "100rel").unwrap();
    r.push_header(HeaderName::RSeq, &rseq.to_string()).unwrap();
    parse(&r.to_bytes()).unwrap()
}

fn pracks(actions: &[Action]) -> Vec<Message> {
    requests(actions)
        .into_iter()
        .filter(|(_, m)| m.method() == Some(&Method::Prack))
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn reliable_provisionals_from_a_callee_are_pracked_once_each_and_in_order() {
    let (mut call, inv, t0) = started(1);
    call.on_invite_response(0, &reliable(&inv[0], 180, 7), t0);
    let a = drain(&mut call);
    let p = pracks(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].header(&HeaderName::RAck), Some("7 1 INVITE"));
    assert_eq!(p[0].cseq().unwrap().seq, 2);
    assert_eq!(p[0].to().unwrap().tag(), Some("b0"));
    assert_eq!(p[0].uri().unwrap().to_string(), "sip:bob@10.0.1.9:5062");
    assert_eq!(caller_answers(&a), vec![180]);
    // Its retransmission (our PRACK's transaction repeats itself) and one that skips a
    // number are dropped; the next in order is PRACKed.
    call.on_invite_response(0, &reliable(&inv[0], 180, 7), t0);
    call.on_invite_response(0, &reliable(&inv[0], 183, 9), t0);
    assert!(drain(&mut call).is_empty());
    call.on_invite_response(0, &reliable(&inv[0], 183, 8), t0);
    let p = pracks(&drain(&mut call));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].header(&HeaderName::RAck), Some("8 1 INVITE"));
    assert_eq!(p[0].cseq().unwrap().seq, 3);
    // The confirmed dialog goes on from the PRACKs' CSeq.
    call.on_invite_response(0, &answer(&inv[0], 200, "b0", Some(CALLEE_SDP)), t0);
    drain(&mut call);
    call.on_request(Leg::Caller, 9, &from_caller(&call, "BYE", 2, None), t0);
    let bye = requests(&drain(&mut call))
        .into_iter()
        .find(|(t, _)| *t == Towards::Branch(0))
        .expect("the BYE to the callee")
        .1;
    assert_eq!(bye.cseq().unwrap().seq, 4);
}

#[test]
fn only_trunk_branches_with_an_offer_are_offered_100rel() {
    let t0 = Instant::now();
    let trunk = Target {
        offers_100rel: true,
        ..targets(1).remove(0)
    };
    let mut call = Call::new(caller_invite(), "t", vec![trunk.clone()], config(), 3, t0).unwrap();
    let inv = invites(&drain(&mut call)).remove(0);
    assert_eq!(inv.header(&HeaderName::Supported), Some("100rel"));
    let (_, phone, _) = started(1);
    assert_eq!(phone[0].header(&HeaderName::Supported), None);
    // A late-offer caller: the answer to a reliable offer would have to be in our PRACK.
    let whole = caller_invite().to_bytes();
    let text = String::from_utf8_lossy(&whole);
    let head = text.split("Content-Type").next().unwrap();
    let late = parse(format!("{head}Content-Length: 0\r\n\r\n").as_bytes()).unwrap();
    let mut call = Call::new(late, "t", vec![trunk], config(), 3, t0).unwrap();
    let inv = invites(&drain(&mut call)).remove(0);
    assert_eq!(inv.header(&HeaderName::Supported), None);
}

#[test]
fn a_cancelled_replacement_ends_the_call() {
    let (mut call, _inv, t0) = answered();
    call.replace(Leg::Caller, 50, &replacing_invite(), "new-tag", false, t0)
        .unwrap();
    let a = drain(&mut call);
    let (key, reinvite) = request_to(&a, Towards::Branch(0));
    let trying = Message::response_to(&reinvite, 180, "Ringing");
    call.on_response(key, &parse(&trying.to_bytes()).unwrap(), t0);
    call.on_cancel(50);
    assert!(drain(&mut call).iter().any(|x| matches!(
        x,
        Action::Request { towards: Towards::Branch(0), request, .. }
            if request.message.method() == Some(&Method::Cancel)
    )));
    let terminated = Message::response_to(&reinvite, 487, "Request Terminated");
    call.on_response(key, &parse(&terminated.to_bytes()).unwrap(), t0);
    let a = drain(&mut call);
    assert!(a.iter().any(
        |x| matches!(x, Action::Respond { tx: 50, response } if response.status() == Some(487))
    ));
    assert!(matches!(a.last(), Some(Action::Ended)));
}

/// An ITSP that authenticates every request challenges the caller's hold (a re-INVITE we
/// relay): it goes again with the trunk's credentials and the next CSeq, and the ITSP's 200
/// reaches the caller as the answer to its re-INVITE, whose ACK goes on with the new CSeq. A
/// second challenge is a refusal: the caller gets 503, never the challenge.
#[test]
fn a_trunk_challenging_a_relayed_re_invite_gets_it_again_with_credentials() {
    use crate::sip::auth::DigestServer;
    let t0 = Instant::now();
    let mut call = answered_by_trunk(t0);
    call.on_request(Leg::Caller, 0, &from_caller(&call, "ACK", 1, None), t0);
    drain(&mut call);

    let hold = CALLER_SDP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    call.on_request(
        Leg::Caller,
        11,
        &from_caller(&call, "INVITE", 2, Some(&hold)),
        t0,
    );
    let (key, first) = relayed(&drain(&mut call));
    let mut itsp = DigestServer::new(b"0123456789abcdef0123456789abcdef");
    let challenge = itsp_challenge(&mut itsp, &first, 407, 1_000);
    call.on_response(key, &challenge, t0);
    let (key, second) = relayed(&drain(&mut call));
    assert_eq!(second.method(), Some(&Method::Invite));
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
    assert_ne!(
        second.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_eq!(second.body(), hold.as_bytes());
    assert_itsp_accepts(&mut itsp, &second, HeaderName::ProxyAuthorization, 1_001);

    call.on_response(key, &answer(&second, 200, "itsp", Some(CALLEE_SDP)), t0);
    match &drain(&mut call)[..] {
        [Action::Respond { tx: 11, response }] => {
            assert_eq!(response.status(), Some(200));
            assert_eq!(response.cseq().unwrap().seq, 2);
        }
        other => panic!("expected the 200 back to the caller, got {other:?}"),
    }
    call.on_request(Leg::Caller, 0, &from_caller(&call, "ACK", 2, None), t0);
    match &drain(&mut call)[..] {
        [Action::Ack { request, .. }] => {
            assert_eq!(
                request.message.cseq().unwrap().seq,
                second.cseq().unwrap().seq
            );
        }
        other => panic!("expected the ACK relayed, got {other:?}"),
    }

    // Resuming: challenged, answered, challenged again. The caller gets 503, not a 407.
    call.on_request(
        Leg::Caller,
        12,
        &from_caller(&call, "INVITE", 3, Some(CALLER_SDP)),
        t0,
    );
    let (key, third) = relayed(&drain(&mut call));
    assert!(third.cseq().unwrap().seq > second.cseq().unwrap().seq);
    let challenge = itsp_challenge(&mut itsp, &third, 407, 1_002);
    call.on_response(key, &challenge, t0);
    let (key, fourth) = relayed(&drain(&mut call));
    let again = itsp_challenge(&mut itsp, &fourth, 407, 1_003);
    call.on_response(key, &again, t0);
    match &drain(&mut call)[..] {
        [Action::Respond { tx: 12, response }] => {
            assert_eq!(response.status(), Some(503));
            assert!(response.header(&HeaderName::ProxyAuthenticate).is_none());
        }
        other => panic!("expected 503 to the caller, got {other:?}"),
    }
}
