//! `oecho`: the echo tool. `--listen` serves; otherwise send one message and
//! print the reply.

use clap::Parser;
use ethflow_tools::{describe, parse_qos, JSON_VERSION};
use irm::{Error, Flow, Qos};
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "oecho",
    about = "ethflow echo client and server",
    version,
    after_help = ethflow_tools::EXIT_STATUS_HELP
)]
struct Args {
    /// Run as server.
    #[arg(short, long)]
    listen: bool,
    /// Server: after echoing, keep the flow until the client deallocates or it goes down.
    #[arg(long, requires = "listen")]
    linger: bool,
    /// Name to allocate a flow to.
    #[arg(short, long, default_value = "oecho")]
    name: String,
    /// Message to send.
    #[arg(short, long, default_value = "Client says hi!")]
    message: String,
    /// Flow liveness timeout in ms (default: irmd's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Client: after the echo, block on a second read and report how it ended.
    #[arg(long, conflicts_with = "listen")]
    wait_down: bool,
    /// QoS cube of the flow: raw, best, video, voice, data, raw_safe, raw_crypt.
    #[arg(short = 'q', long = "qos", default_value = "raw", value_parser = parse_qos)]
    qos: Qos,
    /// Client: print the reply as one JSON object.
    #[arg(short, long, conflicts_with_all = ["listen", "wait_down"])]
    json: bool,
    /// Write the manual page and shell completions under DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate: Option<std::path::PathBuf>,
}

/// The client's result, as `--json` prints it (docs/json.md, "Tools").
#[derive(Serialize, Debug)]
struct Echo<'a> {
    version: u32,
    kind: &'static str,
    name: &'a str,
    reply: String,
    /// From the write to the reply, in ms.
    rtt_ms: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate {
        return ethflow_tools::generate(<Args as clap::CommandFactory>::command(), dir);
    }
    ethflow_tools::init_log();
    let r = if args.listen {
        server(&args)
    } else {
        client(&args)
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oecho: {e}");
            ExitCode::FAILURE
        }
    }
}

fn qos(args: &Args) -> Qos {
    args.qos.with_timeout(args.timeout.unwrap_or(0))
}

fn server(args: &Args) -> Result<ExitCode, String> {
    println!("oecho server listening.");
    let mut buf = vec![0u8; 65536];
    loop {
        let flow = Flow::accept(None).map_err(|e| format!("accept failed: {}", describe(&e)))?;
        println!("New flow {}.", flow.flow_id());
        flow.set_read_timeout(Some(Duration::from_secs(10)));
        match flow.read(&mut buf) {
            Ok(n) => {
                println!(
                    "Message from client is {}.",
                    String::from_utf8_lossy(&buf[..n])
                );
                if let Err(e) = flow.write(&buf[..n]) {
                    println!("Echo on flow {} failed: {}", flow.flow_id(), describe(&e));
                }
            }
            Err(e) => println!("Read on flow {} failed: {}", flow.flow_id(), describe(&e)),
        }
        if args.linger {
            // Wait for whatever ends the flow, and say which it was.
            flow.set_read_timeout(None);
            let start = Instant::now();
            loop {
                match flow.read(&mut buf) {
                    Ok(_) => continue,
                    Err(e) => {
                        println!(
                            "Flow {} ended after {:.3} s: {}",
                            flow.flow_id(),
                            start.elapsed().as_secs_f64(),
                            match e {
                                Error::FlowDown =>
                                    "client deallocated or flow down (EFLOWDOWN, -1005)".to_string(),
                                other => describe(&other),
                            }
                        );
                        break;
                    }
                }
            }
        }
        drop(flow);
    }
}

fn client(args: &Args) -> Result<ExitCode, String> {
    let flow = Flow::alloc(&args.name, &qos(args), Some(Duration::from_secs(10)))
        .map_err(|e| format!("cannot allocate a flow to {}: {}", args.name, describe(&e)))?;
    let sent = Instant::now();
    flow.write(args.message.as_bytes())
        .map_err(|e| format!("write failed: {}", describe(&e)))?;
    let mut buf = vec![0u8; 65536];
    flow.set_read_timeout(Some(Duration::from_secs(10)));
    let n = flow
        .read(&mut buf)
        .map_err(|e| format!("no reply: {}", describe(&e)))?;
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    if args.json {
        let echo = Echo {
            version: JSON_VERSION,
            kind: "oecho",
            name: &args.name,
            reply,
            rtt_ms: sent.elapsed().as_secs_f64() * 1e3,
        };
        println!(
            "{}",
            serde_json::to_string(&echo).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{reply}");
    if !args.wait_down {
        return Ok(ExitCode::SUCCESS);
    }
    flow.set_read_timeout(None);
    let start = Instant::now();
    let r = flow.read(&mut buf);
    let secs = start.elapsed().as_secs_f64();
    match r {
        Ok(n) => {
            println!("second read returned {n} bytes after {secs:.3} s");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("second read failed after {secs:.3} s: {}", describe(&e));
            Ok(if matches!(e, Error::FlowDown | Error::FlowPeer) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
