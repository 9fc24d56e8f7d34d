//! `midge sub`: subscribes and prints what arrives; flag-compatible with `mosquitto_sub`,
//! plus `--json`.

use super::args::{Config, Tool};
use super::common;
use super::format;
use midge_client::{Client, Message, Messages, QoS, RetainHandling, Subscription};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

pub const USAGE: &str = concat!(
    "\
midge sub is a simple MQTT client that subscribes to a set of topics and prints all messages
it receives. It takes the flags of mosquitto_sub.

Usage: midge sub {[-h host] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}
                 [-c] [-k keepalive] [-q qos] [-x session-expiry-interval]
                 [-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]
                 [-F format | --json]
                 [-W timeout_secs]
                 [-A bind_address] [--nodelay]
                 [-i id] [-I id_prefix]
                 [-d] [-N] [--quiet] [-v]
                 [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                 [-V protocol-version]
                 [{--cafile file | --capath dir} [--cert file] [--key file] [--insecure]
                   [--tls-version version] [--tls-alpn protocol] [--tls-use-os-certs]]
                 [-D command identifier value]
       midge sub --help

 -A : bind the outgoing socket to this host/ip address. Use to control which interface
      the client communicates over.
 -c : disable clean session/enable persistent client mode
      When this argument is used, the broker will be instructed not to clean existing sessions
      for the same client id when the client connects, and sessions will never expire when the
      client disconnects. MQTT v5 clients can change their session expiry interval with the -x
      argument.
 -C : disconnect and exit after receiving the 'msg_count' messages.
 -d : enable debug messages (every packet sent and received).
 -D : define MQTT v5 properties: -D command identifier value, where command is one of
      connect, subscribe, unsubscribe, disconnect, will (and auth), e.g.
      -D subscribe subscription-identifier 7, -D connect user-property key value.
      Implies MQTT v5.
 -E : Exit once all subscriptions have been acknowledged by the broker.
 -F : output format: %t topic, %p payload, %q QoS, %r retain flag, %l payload length,
      %m message id, %x / %X payload in hex, %j / %J JSON (payload escaped / as JSON),
      %I ISO 8601 time, %U Unix time with nanoseconds, %C content type, %D correlation data,
      %E message expiry interval, %F payload format indicator, %P user properties,
      %R response topic, %S subscription identifier, %A topic alias, %% a percent sign;
      @ followed by a strftime character (@Y, @H, ...; @N nanoseconds; @@ an at sign);
      \\n \\t \\r \\0 \\a \\e \\v \\\\ escapes. Width, '-' and '0' flags and precision as in printf:
      %-20t, %08l, %.10p.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id assigned by the broker.
 -I : define the client id as id_prefix appended with the process id. Useful for when the
      broker is using the clientid_prefixes option.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt(s)://[username[:password]@]host[:port]/topic
 -N : do not add an end of line character when printing the payload.
 -p : network port to connect to. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
 -P : provide a password
 -q : quality of service level to use for the subscription. Defaults to 0.
 -R : do not print stale messages (those with retain set).
 -t : mqtt topic to subscribe to. May be repeated multiple times.
 -T : topic string to filter out of results. May be repeated.
 -u : provide a username
 -U : unsubscribe from a topic. May be repeated.
 -v : print published messages verbosely (topic, then payload).
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31 (or 5, 311, 31). Defaults to mqttv311.
 -W : Specifies a timeout in seconds how long to process incoming MQTT messages.
 -x : Set the session-expiry-interval property on the CONNECT packet. Applies to MQTT v5
      clients only. Set to 0-4294967294 to specify the session will expire in that many
      seconds after the client disconnects, or use -1, 4294967295, or ∞ for a session
      that does not expire. Defaults to -1 if -c is also given, or 0 if -c not given.
 --help : display this message.
 --json : print one JSON object per message: topic, qos, retain, properties, and the
          payload as UTF-8 text or, when it is not UTF-8, base64 (\"encoding\" says which).
 --nodelay : disable Nagle's algorithm, to reduce socket sending latency at the possible
             expense of more packets being sent.
 --pretty : print formatted output rather than minimised output when using the
            JSON output format option (%j, %J).
 --quiet : don't print error messages.
 --random-filter : only print a percentage of received messages. Set to 100 to have all
                   messages printed, 50.0 to have half of the messages received on average
                   printed, and so on.
 --retain-as-published : ask the broker to keep the retain flag as published (MQTT v5).
 --retained-only : only handle messages with the retained flag set, and exit when the
                   first non-retained message is received.
 --remove-retained : send a message to the server to clear any received retained messages
                     Use -T to filter out messages you do not want to be cleared.
",
    common::will_and_tls_help!()
);

/// Runs `midge sub` with the arguments after the subcommand name.
pub fn main(args: &[String]) -> ExitCode {
    common::main(Tool::Sub, USAGE, args, run)
}

/// Why the receive loop stopped.
enum End {
    /// -C reached, --retained-only saw a live message, -E, or a signal.
    Done,
    TimedOut,
    Failed(ExitCode),
}

async fn run(cfg: Config) -> ExitCode {
    let (client, mut messages, debug) = match common::connect(&cfg).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let deadline = cfg.timeout.map(|s| Duration::from_secs(u64::from(s)));
    let work = async {
        if let Err(code) = subscribe(&cfg, &client, debug.as_ref()).await {
            return End::Failed(code);
        }
        if cfg.exit_after_sub {
            return End::Done;
        }
        receive(&cfg, &client, &mut messages).await
    };
    let end = tokio::select! {
        end = with_timeout(deadline, work) => end,
        _ = shutdown_signal() => End::Done,
    };
    match end {
        End::Done => {
            common::disconnect(&cfg, &client).await;
            ExitCode::SUCCESS
        }
        End::TimedOut => common::timed_out(&cfg, &client).await,
        End::Failed(code) => code,
    }
}

async fn with_timeout(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = End>,
) -> End {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(End::TimedOut),
        None => work.await,
    }
}

async fn subscribe(
    cfg: &Config,
    client: &Client,
    debug: Option<&common::Debug>,
) -> Result<(), ExitCode> {
    if !cfg.topics.is_empty() {
        let handling = if cfg.no_retain && cfg.protocol.is_v5() {
            RetainHandling::DoNotSend
        } else {
            RetainHandling::SendAtSubscribe
        };
        let subs = cfg.topics.iter().map(|t| {
            Subscription::new(t.as_str(), cfg.qos)
                .retain_as_published(cfg.retain_as_published)
                .retain_handling(handling)
        });
        let ack = client
            .subscribe_many(subs, cfg.props.subscribe.clone())
            .await
            .map_err(|e| common::report_lost(cfg, Some(&e)))?;
        if let Some(debug) = debug {
            let codes: Vec<String> = ack.reason_codes.iter().map(|c| c.0.to_string()).collect();
            debug.line(&format!("Subscribed (mid: 1): {}", codes.join(", ")));
        }
        if ack.reason_codes.iter().all(|c| c.is_error()) {
            if !cfg.quiet {
                eprintln!("All subscription requests were denied.");
            }
            return Err(ExitCode::from(1));
        }
    }
    for topic in &cfg.unsub_topics {
        client
            .unsubscribe([topic.as_str()], cfg.props.unsubscribe.clone())
            .await
            .map_err(|e| common::report_lost(cfg, Some(&e)))?;
    }
    Ok(())
}

async fn receive(cfg: &Config, client: &Client, messages: &mut Messages) -> End {
    let mut printed = 0u32;
    let mut out = Vec::new();
    let mut random = Random::seeded();
    while let Some(message) = messages.recv().await {
        if cfg.retained_only && !message.retain {
            return End::Done;
        }
        if message.retain && cfg.no_retain {
            continue;
        }
        if cfg
            .filter_outs
            .iter()
            .any(|f| midge_proto::topic::matches(f, &message.topic))
        {
            continue;
        }
        if cfg.remove_retained && message.retain {
            clear_retained(client, &message).await;
        }
        if cfg.random_filter < 1000 && random.below(1000) >= cfg.random_filter {
            continue;
        }
        out.clear();
        format::render(cfg, &message, &mut out);
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return End::Failed(ExitCode::from(1));
        }
        if cfg.msg_count > 0 {
            printed += 1;
            if printed == cfg.msg_count {
                return End::Done;
            }
        }
    }
    End::Failed(common::report_lost(cfg, messages.close_reason().as_ref()))
}

/// `--remove-retained`: an empty retained message clears the topic.
async fn clear_retained(client: &Client, message: &Message) {
    let clear = Message::new(message.topic.clone(), "")
        .qos(QoS::AtLeastOnce)
        .retain(true);
    // Sent without waiting for PUBACK: the disconnect at the end follows it on the wire.
    let _ = client.start_publish(clear).await;
}

/// SIGINT or SIGTERM: Mosquitto's tools disconnect cleanly and exit 0.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A small xorshift generator for `--random-filter` (no cryptographic needs).
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Random(u64::from(nanos) | 1)
    }

    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}
