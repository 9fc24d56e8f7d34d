//! `midge rr`: request/response. Subscribes to the response topic, publishes the request
//! (with the MQTT 5 Response Topic property), prints the first response and exits;
//! flag-compatible with `mosquitto_rr`.

use super::args::{Config, MessageMode, Tool};
use super::common;
use super::format;
use bytes::Bytes;
use midge_client::{Message, Subscription};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub const USAGE: &str = "\
midge rr is an MQTT client that publishes a request message and waits for a response.
It takes the flags of mosquitto_rr. It defaults to MQTT v5, where the request carries the
Response Topic property; with -V 311 the responder must know where to answer.

Usage: midge rr {[-h host] [-p port] [-u username] [-P password] -t topic | -L URL} -e response-topic
                {-f file | -m message | -n | -s}
                [-c] [-k keepalive] [-q qos] [-R] [-x session-expiry-interval]
                [-F format]
                [-W timeout_secs]
                [-A bind_address] [--nodelay]
                [-i id] [-I id_prefix]
                [-d] [-N] [--quiet] [-v]
                [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                [-V protocol-version]
                [-D command identifier value]
       midge rr --help

 -A : bind the outgoing socket to this host/ip address.
 -c : disable clean session/enable persistent client mode.
 -d : enable debug messages (every packet sent and received).
 -D : define MQTT v5 properties: -D command identifier value (connect, publish, subscribe,
      unsubscribe, disconnect, will), e.g. -D publish correlation-data 42.
 -e : response topic. The client subscribes to it and waits for a response there.
 -f : send the contents of a file as the request.
 -F : output format, as for midge sub.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id assigned by the broker.
 -I : define the client id as id_prefix appended with the process id.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt://[username[:password]@]host[:port]/topic
 -m : request payload to send.
 -n : send a null (zero length) request.
 -N : do not add an end of line character when printing the payload.
 -p : network port to connect to. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
 -P : provide a password
 -q : quality of service level to use for communications. Defaults to 0.
 -R : do not print stale messages (those with retain set).
 -s : read the request from stdin.
 -t : topic where the request message will be sent.
 -u : provide a username
 -v : print received messages verbosely.
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31 (or 5, 311, 31). Defaults to 5.
 -W : Specifies a timeout in seconds how long to wait for a response.
 -x : Set the session-expiry-interval property on the CONNECT packet (MQTT v5).
 --help : display this message.
 --nodelay : disable Nagle's algorithm.
 --pretty : print formatted output rather than minimised output when using the
            JSON output format option.
 --quiet : don't print error messages.
 --will-payload, --will-qos, --will-retain, --will-topic : the client's Will, as for midge pub.
 --cafile, --capath, --cert, --key, --insecure, --tls-version, --tls-use-os-certs,
 --tls-alpn : TLS, as for midge pub.

See docs/tools.md for more information.
";

/// Runs `midge rr` with the arguments after the subcommand name.
pub fn main(args: &[String]) -> ExitCode {
    common::main(Tool::Rr, USAGE, args, run)
}

async fn request_payload(cfg: &Config) -> Result<Bytes, ExitCode> {
    match &cfg.message {
        MessageMode::Cmd(m) => Ok(Bytes::from(m.clone())),
        MessageMode::File(path) => tokio::fs::read(path).await.map(Bytes::from).map_err(|_| {
            if !cfg.quiet {
                eprintln!("Error: Unable to open file \"{path}\".");
                eprintln!("Error loading input file \"{path}\".");
            }
            ExitCode::from(1)
        }),
        MessageMode::StdinFile | MessageMode::StdinLine => {
            let mut data = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut data)
                .await
                .map(|_| Bytes::from(data))
                .map_err(|_| ExitCode::from(1))
        }
        MessageMode::Null | MessageMode::None => Ok(Bytes::new()),
    }
}

async fn run(cfg: Config) -> ExitCode {
    let payload = match request_payload(&cfg).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (client, mut messages, _debug) = match common::connect(&cfg).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let response_topic = cfg.response_topic.clone().unwrap_or_default();
    let topic = cfg.topic.clone().unwrap_or_default();
    let exchange = async {
        let sub = Subscription::new(response_topic.as_str(), cfg.qos);
        if let Err(e) = client
            .subscribe_many([sub], cfg.props.subscribe.clone())
            .await
        {
            return Err(common::report_lost(&cfg, Some(&e)));
        }
        let mut props = cfg.props.publish.clone();
        if cfg.protocol.is_v5() {
            props.response_topic = Some(response_topic.as_str().into());
        }
        let request = Message::new(topic.as_str(), payload)
            .qos(cfg.qos)
            .properties(props);
        if let Err(e) = client.publish_message(request).await {
            return Err(common::report_lost(&cfg, Some(&e)));
        }
        loop {
            let Some(message) = messages.recv().await else {
                return Err(common::report_lost(&cfg, messages.close_reason().as_ref()));
            };
            if message.retain && cfg.no_retain {
                continue;
            }
            let mut out = Vec::new();
            format::render(&cfg, &message, &mut out);
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
            return Ok(());
        }
    };
    let limit = cfg.timeout.map(|s| Duration::from_secs(u64::from(s)));
    let result = match limit {
        Some(limit) => tokio::time::timeout(limit, exchange).await.ok(),
        None => Some(exchange.await),
    };
    match result {
        Some(Ok(())) => {
            common::disconnect(&cfg, &client).await;
            ExitCode::SUCCESS
        }
        Some(Err(code)) => code,
        None => common::timed_out(&cfg, &client).await,
    }
}
