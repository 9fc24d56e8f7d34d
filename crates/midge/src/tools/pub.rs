//! `midge pub`: publishes one message (or one per line of standard input) and exits;
//! flag-compatible with `mosquitto_pub`.

use super::args::{Config, MessageMode, Tool};
use super::common;
use bytes::Bytes;
use midge_client::{Client, Error, Message, PendingAck, PublishAck, QoS};
use std::collections::VecDeque;
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

pub const USAGE: &str = concat!(
    "\
midge pub is a simple MQTT client that publishes a message on a single topic and exits.
It takes the flags of mosquitto_pub.

Usage: midge pub {[-h host] [-p port] [-u username] [-P password] -t topic | -L URL}
                 {-f file | -l | -n | -m message | -s}
                 [-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]
                 [-A bind_address] [--nodelay]
                 [-i id] [-I id_prefix]
                 [-d] [--quiet]
                 [-M max_inflight]
                 [-u username [-P password]]
                 [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                 [-V protocol-version]
                 [{--cafile file | --capath dir} [--cert file] [--key file] [--insecure]
                   [--tls-version version] [--tls-alpn protocol] [--tls-use-os-certs]]
                 [-D command identifier value]
       midge pub --help

 -A : bind the outgoing socket to this host/ip address. Use to control which interface
      the client communicates over.
 -c : disable clean session/enable persistent client mode
      When this argument is used, the broker will be instructed not to clean existing sessions
      for the same client id when the client connects, and sessions will never expire when the
      client disconnects. MQTT v5 clients can change their session expiry interval with the -x
      argument.
 -d : enable debug messages (every packet sent and received).
 -D : define MQTT v5 properties: -D command identifier value, where command is one of
      connect, publish, disconnect, will (and auth), e.g. -D publish user-property key value,
      -D publish message-expiry-interval 60, -D connect session-expiry-interval 3600.
      Implies MQTT v5.
 -f : send the contents of a file as the message.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id assigned by the broker.
 -I : define the client id as id_prefix appended with the process id. Useful for when the
      broker is using the clientid_prefixes option.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt(s)://[username[:password]@]host[:port]/topic
 -l : read messages from stdin, sending a separate message for each line.
 -m : message payload to send.
 -M : the maximum inflight messages for QoS 1/2. Defaults to 20.
 -n : send a null (zero length) message.
 -p : network port to connect to. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
 -P : provide a password
 -q : quality of service level to use for all messages. Defaults to 0.
 -r : message should be retained.
 -s : read message from stdin, sending the entire input as a message.
 -t : mqtt topic to publish to.
 -u : provide a username
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31 (or 5, 311, 31). Defaults to mqttv311.
 -x : Set the session-expiry-interval property on the CONNECT packet. Applies to MQTT v5
      clients only. Set to 0-4294967294 to specify the session will expire in that many
      seconds after the client disconnects, or use -1, 4294967295, or ∞ for a session
      that does not expire. Defaults to -1 if -c is also given, or 0 if -c not given.
 --help : display this message.
 --nodelay : disable Nagle's algorithm, to reduce socket sending latency at the possible
             expense of more packets being sent.
 --quiet : don't print error messages.
 --repeat : if publish mode is -f, -m, or -s, then repeat the publish N times.
 --repeat-delay : if using --repeat, wait time seconds between publishes. Defaults to 0.
",
    common::will_and_tls_help!()
);

/// Runs `midge pub` with the arguments after the subcommand name.
pub fn main(args: &[String]) -> ExitCode {
    common::main(Tool::Pub, USAGE, args, run)
}

async fn run(cfg: Config) -> ExitCode {
    // Read a file or stdin before connecting, as Mosquitto does.
    let payload = match load_payload(&cfg).await {
        Ok(payload) => payload,
        Err(code) => return code,
    };
    let (client, _messages, _debug) = match common::connect(&cfg).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let mut publisher = Publisher::new(&cfg, client.clone());
    let result = match payload {
        Some(payload) => publisher.repeat(payload).await,
        None => publisher.lines().await,
    };
    let result = match result {
        Ok(()) => publisher.drain().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            common::disconnect(&cfg, &client).await;
            ExitCode::SUCCESS
        }
        Err(e) => common::report_lost(&cfg, Some(&e)),
    }
}

/// The single payload of `-m`, `-f`, `-s` or `-n`; `None` for `-l` (line by line).
async fn load_payload(cfg: &Config) -> Result<Option<Bytes>, ExitCode> {
    Ok(Some(match &cfg.message {
        MessageMode::Cmd(m) => Bytes::from(m.clone()),
        MessageMode::Null | MessageMode::None => Bytes::new(),
        MessageMode::File(path) => match tokio::fs::read(path).await {
            Ok(data) => Bytes::from(data),
            Err(_) => {
                if !cfg.quiet {
                    eprintln!("Error: Unable to open file \"{path}\".");
                    eprintln!("Error loading input file \"{path}\".");
                }
                return Err(ExitCode::from(1));
            }
        },
        MessageMode::StdinFile => {
            let mut data = Vec::new();
            if tokio::io::stdin().read_to_end(&mut data).await.is_err() {
                if !cfg.quiet {
                    eprintln!("Error loading input from stdin.");
                }
                return Err(ExitCode::from(1));
            }
            Bytes::from(data)
        }
        MessageMode::StdinLine => return Ok(None),
    }))
}

/// Publishes with at most `-M` QoS 1/2 messages awaiting acknowledgement.
struct Publisher<'a> {
    cfg: &'a Config,
    client: Client,
    /// With the number of each message (Mosquitto's message id in simple cases), for
    /// "Warning: Publish 3 failed: ...".
    in_flight: VecDeque<(u32, PendingAck<PublishAck>)>,
    sent: u32,
}

impl<'a> Publisher<'a> {
    fn new(cfg: &'a Config, client: Client) -> Self {
        Publisher {
            cfg,
            client,
            in_flight: VecDeque::new(),
            sent: 0,
        }
    }

    async fn repeat(&mut self, payload: Bytes) -> Result<(), Error> {
        for n in 0..self.cfg.repeat_count {
            if n > 0 && !self.cfg.repeat_delay.is_zero() {
                tokio::time::sleep(self.cfg.repeat_delay).await;
            }
            self.publish(payload.clone()).await?;
        }
        Ok(())
    }

    /// `-l`: one message per line of stdin (without its newline; empty lines are sent
    /// as empty messages).
    async fn lines(&mut self) -> Result<(), Error> {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = stdin.read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Ok(());
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            self.publish(Bytes::copy_from_slice(&line)).await?;
        }
    }

    async fn publish(&mut self, payload: Bytes) -> Result<(), Error> {
        let topic = self.cfg.topic.clone().unwrap_or_default();
        let message = Message::new(topic, payload)
            .qos(self.cfg.qos)
            .retain(self.cfg.retain)
            .properties(self.cfg.props.publish.clone());
        let ack = self.client.start_publish(message).await?;
        self.sent = self.sent.wrapping_add(1);
        if self.cfg.qos == QoS::AtMostOnce {
            return settle(self.cfg, self.sent, ack.await);
        }
        self.in_flight.push_back((self.sent, ack));
        while self.in_flight.len() >= usize::from(self.cfg.max_inflight) {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<(), Error> {
        match self.in_flight.pop_front() {
            Some((n, ack)) => settle(self.cfg, n, ack.await),
            None => Ok(()),
        }
    }

    async fn drain(&mut self) -> Result<(), Error> {
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }
}

/// A refused publish is a warning (the others go on); a lost connection ends the run.
fn settle(cfg: &Config, n: u32, result: Result<PublishAck, Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(Error::PublishRefused { reason_code, .. }) => {
            if !cfg.quiet {
                eprintln!("Warning: Publish {n} failed: {}.", reason_code.name());
            }
            Ok(())
        }
        Err(e @ (Error::InvalidRequest(_) | Error::PacketTooLarge { .. })) => {
            if !cfg.quiet {
                eprintln!("Error: {e}");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
