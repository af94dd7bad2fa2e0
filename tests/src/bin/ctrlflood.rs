//! `ctrlflood`: attacks on irmd's control socket for the access tests. Every
//! loop is bounded in count and time.
//!
//! * `conns N HOLD_MS` — open N connections (no hello), print `opened K`,
//!   hold them HOLD_MS, close.
//! * `names N LEN [PREFIX]` — register N names of LEN bytes in layer `eth` (as the
//!   `irm` tool), print `registered K refused R last-error ...`.
//! * `fds N` — as an application, send N messages carrying MAX_FDS+1 and 40
//!   fds in turn, reading irmd's answer to each; print `sent K answered A`.
//! * `forge N MS` — as an application, send N forged IPCP messages
//!   (allocation results for guessed flow and request ids), repeating for
//!   up to MS milliseconds; print `forged K`.
//! * `noread N HOLD_MS` — as the `irm` tool, send up to N name-list
//!   requests without reading a reply (until a send blocks for 2 s), print
//!   `requested K`, hold the connection HOLD_MS.
//! * `version V` — say hello with protocol version V; print irmd's answer.
//! * `probe N` — N times: connect as the `irm` tool, list IPCPs; print the
//!   median and slowest round trips as `median-ms=X max-ms=Y ok=K`.

use irm::ctrl::CtrlSocket;
use irm::proto::{
    socket_path, CliRequest, ClientHello, ClientRole, Envelope, IpcpToIrmd, Reply, MAX_FDS,
    PROTO_VERSION,
};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn hello(role: ClientRole) -> Result<CtrlSocket, String> {
    let s = CtrlSocket::connect(&socket_path()).map_err(|e| e.to_string())?;
    s.set_send_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    s.send(
        &ClientHello {
            version: PROTO_VERSION,
            role,
        },
        &[],
    )
    .map_err(|e| e.to_string())?;
    match s.recv::<Reply>() {
        Ok(Some(r)) if r.env.msg == Reply::Ok => Ok(s),
        Ok(Some(r)) => Err(format!("{:?}", r.env.msg)),
        Ok(None) => Err("irmd closed the connection".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} must be a number"))
}

fn main() -> ExitCode {
    irm::limits::raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("conns") => conns(arg(&args, 1) as usize, arg(&args, 2)),
        Some("names") => names(
            arg(&args, 1) as usize,
            arg(&args, 2) as usize,
            args.get(3).map_or("n", String::as_str),
        ),
        Some("fds") => fds(arg(&args, 1) as usize),
        Some("forge") => forge(arg(&args, 1) as usize, arg(&args, 2)),
        Some("probe") => probe(arg(&args, 1) as usize),
        Some("version") => version(arg(&args, 1) as u32),
        Some("noread") => noread(arg(&args, 1) as usize, arg(&args, 2)),
        _ => Err("usage: ctrlflood conns|names|fds|forge|probe ...".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctrlflood: {e}");
            ExitCode::FAILURE
        }
    }
}

fn conns(n: usize, hold_ms: u64) -> Result<(), String> {
    let n = n.min(20_000);
    let path = socket_path();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        match CtrlSocket::connect(&path) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    println!("opened {} failed {failed}", held.len());
    std::thread::sleep(Duration::from_millis(hold_ms.min(60_000)));
    Ok(())
}

fn names(n: usize, len: usize, prefix: &str) -> Result<(), String> {
    let s = hello(ClientRole::Cli)?;
    let (mut ok, mut refused, mut last) = (0, 0, String::new());
    for i in 0..n.min(10_000) {
        let mut name = format!("{prefix}{i:06}-");
        while name.len() < len {
            name.push('n');
        }
        s.send(
            &Envelope {
                id: i as u64 + 1,
                msg: CliRequest::NameRegister {
                    name,
                    layer: "eth".into(),
                },
            },
            &[],
        )
        .map_err(|e| e.to_string())?;
        match s.recv::<Reply>().map_err(|e| e.to_string())? {
            Some(r) if r.env.msg == Reply::Ok => ok += 1,
            Some(r) => {
                refused += 1;
                last = format!("{:?}", r.env.msg);
            }
            None => return Err("irmd closed the connection".into()),
        }
    }
    println!("registered {ok} refused {refused} last-error {last}");
    Ok(())
}

fn fds(n: usize) -> Result<(), String> {
    let s = hello(ClientRole::App {
        prog: "ctrlflood".into(),
    })?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    // One more than allowed (fits the receiver's buffer), and far more
    // (truncated by the kernel: MSG_CTRUNC), in turn.
    let over = vec![null.as_raw_fd(); MAX_FDS + 1];
    let far_over = vec![null.as_raw_fd(); 40];
    let bytes = irm::proto::encode(&Envelope {
        id: 1,
        msg: irm::proto::AppRequest::FlowDealloc { flow_id: 1 },
    })
    .map_err(|e| e.to_string())?;
    let (mut sent, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..n.min(100_000) {
        if Instant::now() > deadline {
            break;
        }
        let many = if i % 2 == 0 { &over } else { &far_over };
        s.send_bytes(&bytes, many, nix::sys::socket::MsgFlags::empty())
            .map_err(|e| e.to_string())?;
        sent += 1;
        match s.recv::<Reply>() {
            Ok(Some(_)) => answered += 1,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    println!("sent {sent} answered {answered}");
    Ok(())
}

fn forge(n: usize, ms: u64) -> Result<(), String> {
    let s = hello(ClientRole::App {
        prog: "ctrlflood".into(),
    })?;
    let deadline = Instant::now() + Duration::from_millis(ms.min(10_000));
    let mut forged = 0u64;
    'outer: for _round in 0..100 {
        for i in 0..n.min(10_000) as u32 {
            if Instant::now() > deadline {
                break 'outer;
            }
            let msg = IpcpToIrmd::FlowAllocResult {
                flow_id: i,
                result: Ok(1000),
            };
            let bytes =
                irm::proto::encode(&Envelope { id: i as u64, msg }).map_err(|e| e.to_string())?;
            // irmd may answer with an error; we do not wait for it.
            if s.send_bytes(&bytes, &[], nix::sys::socket::MsgFlags::MSG_DONTWAIT)
                .is_ok()
            {
                forged += 1;
            }
            // Drain answers so irmd never has to queue for us.
            while let Ok(Some(_)) = nonblocking_recv(&s) {}
        }
    }
    println!("forged {forged}");
    Ok(())
}

fn nonblocking_recv(s: &CtrlSocket) -> irm::Result<Option<irm::ctrl::RawReceived>> {
    let mut p = [nix::poll::PollFd::new(
        s.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO) {
        Ok(1) => s.recv_raw(),
        _ => Ok(None),
    }
}

use std::os::fd::AsFd;

fn probe(n: usize) -> Result<(), String> {
    let mut times = Vec::new();
    let mut ok = 0;
    for _ in 0..n.min(1000) {
        let t = Instant::now();
        let s = hello(ClientRole::Cli)?;
        s.send(
            &Envelope {
                id: 1,
                msg: CliRequest::IpcpList,
            },
            &[],
        )
        .map_err(|e| e.to_string())?;
        match s.recv::<Reply>().map_err(|e| e.to_string())? {
            Some(r) if matches!(r.env.msg, Reply::IpcpRows(_)) => ok += 1,
            other => return Err(format!("unexpected {:?}", other.map(|r| r.env.msg))),
        }
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "median-ms={:.3} max-ms={:.3} ok={ok}",
        ms(times.get(times.len() / 2)),
        ms(times.last())
    );
    Ok(())
}

fn version(v: u32) -> Result<(), String> {
    let s = CtrlSocket::connect(&socket_path()).map_err(|e| e.to_string())?;
    s.send(
        &ClientHello {
            version: v,
            role: ClientRole::Cli,
        },
        &[],
    )
    .map_err(|e| e.to_string())?;
    match s.recv::<Reply>() {
        Ok(Some(r)) => match r.env.msg {
            Reply::Err(e) => println!("refused: {e}"),
            other => println!("answer: {other:?}"),
        },
        Ok(None) => println!("closed"),
        Err(e) => println!("error: {e}"),
    }
    Ok(())
}

fn noread(n: usize, hold_ms: u64) -> Result<(), String> {
    let s = hello(ClientRole::Cli)?;
    s.set_send_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let mut sent = 0;
    for i in 0..n.min(100_000) {
        let env = Envelope {
            id: i as u64 + 1,
            msg: CliRequest::NameList { after: None },
        };
        if s.send(&env, &[]).is_err() {
            break;
        }
        sent += 1;
    }
    println!("requested {sent}");
    std::thread::sleep(Duration::from_millis(hold_ms.min(60_000)));
    Ok(())
}
