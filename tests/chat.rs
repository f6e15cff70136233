//! The bundled demo chat room, as a browser would use it.

mod cluster;

use cluster::{Cluster, Gw, Spec};
use serde_json::json;

#[test]
fn chat_room_login_say_private_and_logout() {
    let c = Cluster::start(Spec::new("chat", 2, vec![Gw::new("websocket", 2)]));
    let mut ann = c.ws(0);
    ann.send(&json!({"type": "login", "client_name": "Ann", "room_id": "1"}).to_string());
    let hello = ann.recv_json();
    assert_eq!(hello["type"], "login");
    let ann_id = hello["client_id"].as_str().unwrap().to_string();
    assert_eq!(hello["client_list"], json!({ann_id.clone(): "Ann"}));

    let mut bob = c.ws(0);
    bob.send(&json!({"type": "login", "client_name": "<Bob>", "room_id": "1"}).to_string());
    let bob_hello = bob.recv_json();
    let bob_id = bob_hello["client_id"].as_str().unwrap().to_string();
    assert_eq!(bob_hello["client_list"], json!({ann_id.clone(): "Ann", bob_id.clone(): "&lt;Bob&gt;"}));
    let notice = ann.recv_json();
    assert_eq!(
        (notice["type"].as_str(), notice["client_name"].as_str()),
        (Some("login"), Some("&lt;Bob&gt;"))
    );

    // Someone in another room hears nothing of room 1.
    let mut eve = c.ws(0);
    eve.send(&json!({"type": "login", "client_name": "Eve", "room_id": "2"}).to_string());
    let eve_hello = eve.recv_json();
    let eve_id = eve_hello["client_id"].as_str().unwrap().to_string();
    assert_eq!(eve_hello["client_list"], json!({ eve_id: "Eve" }), "room 2 has only Eve");

    ann.send(&json!({"type": "say", "to_client_id": "all", "content": "hi all"}).to_string());
    for ws in [&mut ann, &mut bob] {
        let m = ws.recv_json();
        assert_eq!((m["from_client_name"].as_str(), m["content"].as_str()), (Some("Ann"), Some("hi all")));
    }
    bob.send(
        &json!({"type": "say", "to_client_id": ann_id, "to_client_name": "Ann", "content": "psst"})
            .to_string(),
    );
    assert_eq!(ann.recv_json()["content"], "<b>says to you: </b>psst");
    assert_eq!(bob.recv_json()["content"], "<b>you say to Ann: </b>psst");

    bob.send(r#"{"type":"list"}"#);
    assert_eq!(bob.recv_json()["client_list"], json!({ann_id.clone(): "Ann", bob_id.clone(): "&lt;Bob&gt;"}));
    drop(bob);
    let bye = ann.recv_json();
    assert_eq!(
        (bye["type"].as_str(), bye["from_client_id"].as_str()),
        (Some("logout"), Some(bob_id.as_str()))
    );
    ann.send("not json");
    assert_eq!(ann.recv_json()["type"], "error");
    // Eve's room stayed quiet: her next message is her own list.
    eve.send(r#"{"type":"list"}"#);
    assert_eq!(eve.recv_json()["type"], "list");
    c.stop();
}
