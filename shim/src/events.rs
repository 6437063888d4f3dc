//! Task events to containerd (`/tasks/create`, `/tasks/exit`, ...), in order, off the RPC path.
//!
//! containerd 1.6 hands the shim two ways to publish: its ttrpc address in `TTRPC_ADDRESS`, where
//! `containerd.services.events.ttrpc.v1.Events/Forward` takes an `Envelope`; and `-publish-binary`
//! (`containerd --address A publish --topic T --namespace N`, the event `Any` on stdin). The ttrpc
//! path is used when the address is known (one round trip, no process); the binary otherwise.
//!
//! One thread sends the queue in order, so a container's `TaskExit` never overtakes its
//! `TaskStart`. A failed send is retried on a fresh connection (containerd may be restarting) a
//! few times, then dropped with an error in the log: containerd asks for state again on reconnect.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::topics;
use protobuf::Message;

const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TRIES: u32 = 5;

/// Where events go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// containerd's ttrpc socket (`TTRPC_ADDRESS`).
    Ttrpc(String),
    /// `publish_binary --address address publish ...`.
    Binary {
        /// The containerd binary.
        publish_binary: PathBuf,
        /// containerd's gRPC address.
        address: String,
    },
    /// Nowhere (tests of the service without a containerd).
    Discard,
}

enum Item {
    Event(Envelope),
    Flush(Sender<()>),
}

/// A handle to the publishing thread. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    namespace: String,
    tx: Sender<Item>,
}

/// Any event the shim sends: the message and its topic.
pub trait Event: MessageFull {
    /// The containerd topic (`/tasks/exit`, ...).
    const TOPIC: &'static str;
}

macro_rules! topic {
    ($t:ty, $topic:expr) => {
        impl Event for $t {
            const TOPIC: &'static str = $topic;
        }
    };
}
topic!(ev::TaskCreate, topics::TASK_CREATE_EVENT_TOPIC);
topic!(ev::TaskStart, topics::TASK_START_EVENT_TOPIC);
topic!(ev::TaskExit, topics::TASK_EXIT_EVENT_TOPIC);
topic!(ev::TaskOOM, topics::TASK_OOM_EVENT_TOPIC);
topic!(ev::TaskDelete, topics::TASK_DELETE_EVENT_TOPIC);
topic!(ev::TaskExecAdded, topics::TASK_EXEC_ADDED_EVENT_TOPIC);
topic!(ev::TaskExecStarted, topics::TASK_EXEC_STARTED_EVENT_TOPIC);
topic!(ev::TaskPaused, topics::TASK_PAUSED_EVENT_TOPIC);
topic!(ev::TaskResumed, topics::TASK_RESUMED_EVENT_TOPIC);

/// Packs a message into an `Any` with the type URL containerd's `typeurl` expects: the bare
/// protobuf full name (`containerd.events.TaskExit`), no `type.googleapis.com/` prefix.
pub fn to_any<M: MessageFull>(m: &M) -> Any {
    let mut any = Any::new();
    any.type_url = M::descriptor().full_name().to_string();
    // Serializing a well-formed generated message into a Vec cannot fail.
    any.value = m.write_to_bytes().unwrap_or_default();
    any
}

/// A protobuf timestamp for `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

impl Publisher {
    /// Starts the publishing thread.
    pub fn start(namespace: &str, sink: Sink) -> Publisher {
        let (tx, rx) = mpsc::channel();
        let ns = namespace.to_string();
        thread::Builder::new()
            .name("events".into())
            .spawn(move || run(rx, sink, ns))
            .map_err(|e| tracing::error!("cannot start the event thread: {e}"))
            .ok();
        Publisher {
            namespace: namespace.to_string(),
            tx,
        }
    }

    /// Queues an event.
    pub fn publish<E: Event>(&self, event: &E) {
        let mut env = Envelope::new();
        env.timestamp = Some(timestamp(SystemTime::now())).into();
        env.namespace = self.namespace.clone();
        env.topic = E::TOPIC.to_string();
        env.event = Some(to_any(event)).into();
        tracing::debug!(topic = E::TOPIC, "publish");
        if self.tx.send(Item::Event(env)).is_err() {
            tracing::error!(topic = E::TOPIC, "event thread is gone; event dropped");
        }
    }

    /// Waits (at most `timeout`) until every event queued so far has been sent or dropped.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }
}

struct Conn {
    address: String,
    client: Option<containerd_shim_protos::EventsClient>,
}

impl Conn {
    fn send(&mut self, env: &Envelope) -> Result<(), String> {
        if self.client.is_none() {
            let addr = if self.address.contains("://") {
                self.address.clone()
            } else {
                format!("unix://{}", self.address)
            };
            let c = ttrpc::Client::connect(&addr)
                .map_err(|e| format!("connecting to containerd at {addr}: {e}"))?;
            self.client = Some(containerd_shim_protos::EventsClient::new(c));
        }
        let mut req = ForwardRequest::new();
        req.envelope = Some(env.clone()).into();
        let ctx = ttrpc::context::with_duration(SEND_TIMEOUT);
        let client = self.client.as_ref().ok_or("no client")?;
        match client.forward(ctx, &req) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.client = None;
                Err(format!("forwarding {}: {e}", env.topic))
            }
        }
    }
}

fn send_binary(publish_binary: &PathBuf, address: &str, env: &Envelope) -> Result<(), String> {
    let any = env.event.as_ref().cloned().unwrap_or_default();
    let bytes = any.write_to_bytes().map_err(|e| e.to_string())?;
    let mut child = Command::new(publish_binary)
        .args(["--address", address, "publish", "--topic", &env.topic])
        .args(["--namespace", &env.namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", publish_binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&bytes)
            .map_err(|e| format!("writing the event: {e}"))?;
    }
    // `wait_with_output` waits for this one child by pid; it never reaps anyone else's.
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} publish failed ({}): {}",
            publish_binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run(rx: Receiver<Item>, sink: Sink, _ns: String) {
    let mut conn = match &sink {
        Sink::Ttrpc(a) => Some(Conn {
            address: a.clone(),
            client: None,
        }),
        _ => None,
    };
    for item in rx {
        let env = match item {
            Item::Event(env) => env,
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let res = match (&sink, conn.as_mut()) {
                (Sink::Ttrpc(_), Some(c)) => c.send(&env),
                (
                    Sink::Binary {
                        publish_binary,
                        address,
                    },
                    _,
                ) => send_binary(publish_binary, address, &env),
                _ => Ok(()),
            };
            match res {
                Ok(()) => break,
                Err(e) if tries >= MAX_TRIES => {
                    tracing::error!("dropping event {} after {tries} tries: {e}", env.topic);
                    break;
                }
                Err(e) => {
                    tracing::warn!("event {} not sent (try {tries}): {e}", env.topic);
                    thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::Events;
    use containerd_shim_protos::api::Empty;
    use std::sync::{Arc, Mutex};

    #[test]
    fn type_urls_are_bare_full_names() {
        let mut e = ev::TaskExit::new();
        e.container_id = "c".into();
        e.exit_status = 3;
        let any = to_any(&e);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert_eq!(ev::TaskExit::parse_from_bytes(&any.value).unwrap(), e);
    }

    struct Recorder(Arc<Mutex<Vec<(String, String, String)>>>);

    impl Events for Recorder {
        fn forward(&self, _ctx: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            let env = req.envelope.unwrap();
            self.0.lock().unwrap().push((
                env.namespace.clone(),
                env.topic.clone(),
                env.event.type_url.clone(),
            ));
            Ok(Empty::new())
        }
    }

    #[test]
    fn events_arrive_in_order_over_ttrpc() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("events.sock");
        let got = Arc::new(Mutex::new(Vec::new()));
        let service: Arc<dyn Events + Send + Sync> = Arc::new(Recorder(got.clone()));
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .unwrap()
            .register_service(containerd_shim_protos::create_events(service));
        server.start().unwrap();

        let p = Publisher::start("k8s.io", Sink::Ttrpc(sock.display().to_string()));
        let mut start = ev::TaskStart::new();
        start.container_id = "c1".into();
        p.publish(&start);
        let mut exit = ev::TaskExit::new();
        exit.container_id = "c1".into();
        p.publish(&exit);
        p.flush(Duration::from_secs(10));
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (
                    "k8s.io".into(),
                    "/tasks/start".into(),
                    "containerd.events.TaskStart".into()
                ),
                (
                    "k8s.io".into(),
                    "/tasks/exit".into(),
                    "containerd.events.TaskExit".into()
                ),
            ]
        );
        server.shutdown();
    }
}
