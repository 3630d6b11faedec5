//! A remote process writes a tensor straight into a server's model memory,
//! and reads it back: the server's tensors live in a `Model` (weights and
//! history Tapes) registered with UCX, and the client puts into them and
//! gets from them with no copy on the server's side.
//!
//! ```text
//! cargo run --release --features ucx --example remote_tensor            # both, over tcp and shared memory
//! cargo run --release --features ucx --example remote_tensor -- server  # the server; prints its port
//! cargo run --release --features ucx --example remote_tensor -- client PORT
//! ```
//!
//! With no argument it runs the server as a child process once per
//! transport (`UCX_TLS=tcp` on loopback, then `UCX_TLS=posix,sysv,cma`) and
//! the client here, and prints the bandwidth of each. As `server` and
//! `client` it takes UCX's settings from the environment (`UCX_TLS`,
//! `UCX_NET_DEVICES`). The server progresses its worker while it waits for
//! the client: without RDMA hardware, that is what moves the bytes. The
//! client has the server confirm each descriptor over the link before it
//! unpacks it, and the server revokes them before it drops its Model.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allocator_api2::vec::Vec;
use unimem::ucx::{Context, Descriptor, ErrorMode, Link, Peers, Registered, Remote};
use unimem::{BlockOptions, Error, Model, Pinning};

/// Floats in the weight tensor (32 MiB) and in the history tensor (8 MiB).
const WEIGHTS: usize = 8 << 20;
const HISTORY: usize = 2 << 20;

/// How much one put or get moves; up to `unimem::ucx::WINDOW` are in flight.
const PIECE: usize = 1 << 20;

const WAIT: Duration = Duration::from_secs(60);

/// The value the client writes at index `i` of a tensor.
fn value(tensor: u32, i: usize) -> f32 {
    (i % (1 << 22)) as f32 * 0.25 - tensor as f32
}

fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: `f32` has no padding; every byte may be read as `u8`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), size_of_val(v)) }
}

fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid `f32`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), size_of_val(v)) }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: std::vec::Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let port = args.get(1).map_or(Ok(0), |p| p.parse())?;
            server(&Context::new(Peers::Trusted)?, port)?;
        }
        Some("client") => {
            let port = args.get(1).ok_or("client PORT")?.parse()?;
            client(
                &Context::new(Peers::Trusted)?,
                port,
                "UCX_TLS from the environment",
                None,
            )?;
        }
        None => {
            for tls in ["tcp", "posix,sysv,cma"] {
                both(tls)?;
            }
        }
        Some(other) => return Err(format!("unknown argument {other}: server, client PORT").into()),
    }
    Ok(())
}

/// Runs the server as a child over `tls`, and the client here.
fn both(tls: &str) -> Result<(), Box<dyn std::error::Error>> {
    let settings = [("TLS", tls), ("NET_DEVICES", "lo")];
    let context = match Context::with_settings(Peers::Trusted, &settings) {
        Ok(context) => context,
        Err(error @ Error::Ucx(_)) => {
            println!("UCX_TLS={tls}: UCX cannot be set up here: {error}");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let mut server = Command::new(std::env::current_exe()?)
        .arg("server")
        .env("UCX_TLS", tls)
        .env("UCX_NET_DEVICES", "lo")
        .env("UCX_LOG_FILE", "stderr")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().ok_or("the server exited before listening")??;
        if let Some(port) = line.strip_prefix("listening on 127.0.0.1:") {
            break port.parse()?;
        }
    };
    // UCX 1.13's shared-memory transports cannot detect a failed peer:
    // `connect` would first try to (and UCX log that it found no transport).
    let mode = (tls != "tcp").then_some(ErrorMode::None);
    let result = client(&context, port, &format!("UCX_TLS={tls}"), mode);
    // What the server says after listening, the client has printed.
    lines.map_while(Result::ok).for_each(drop);
    let status = server.wait()?;
    result?;
    if !status.success() {
        return Err(format!("the server failed: {status}").into());
    }
    Ok(())
}

/// The owner: tensors in a registered Model, shared with one client.
fn server(context: &Context, port: u16) -> Result<(), Error> {
    let worker = context.worker()?;
    let options = BlockOptions::new().pinning(Pinning::BestEffort).quiet(true);
    let model = Model::open_with(
        WEIGHTS * 4 + (1 << 20),
        1 << 20,
        HISTORY * 4 + (1 << 20),
        &options,
    )?;
    let model = Registered::new(context, model)?;
    let mut weights: Vec<f32, _> = Vec::with_capacity_in(WEIGHTS, model.weights());
    weights.resize(WEIGHTS, 0.0);
    let talk = model.talk()?;
    let mut history: Vec<f32, _> = Vec::with_capacity_in(HISTORY, talk.history());
    history.resize(HISTORY, 0.0);

    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|source| Error::Os {
        call: "bind",
        source,
    })?;
    let address = listener.local_addr().map_err(|source| Error::Os {
        call: "getsockname",
        source,
    })?;
    println!("listening on {address}");
    let mut link = Link::accept(&listener, WAIT)?;
    link.send_address(&worker)?;
    link.send(&model.descriptor_of(&weights)?.to_bytes())?;
    link.send(&model.descriptor_of(&history)?.to_bytes())?;

    // The client writes both tensors; this side serves it meanwhile, then
    // checks every value where it landed.
    let said = link.recv_serving(&worker, WAIT)?;
    assert_eq!(said, b"written");
    let wrong = (0..WEIGHTS)
        .filter(|&i| weights[i] != value(0, i))
        .chain((0..HISTORY).filter(|&i| history[i] != value(1, i)))
        .count();
    let verdict = if wrong == 0 {
        format!(
            "checked {} MiB in place: every value right",
            ((WEIGHTS + HISTORY) * 4) >> 20
        )
    } else {
        format!("{wrong} values wrong")
    };
    println!("{verdict}");
    link.send(verdict.as_bytes())?;
    // Serve the client's reads until it is done; then take back what it
    // was given before the Model goes.
    let said = link.recv_serving(&worker, WAIT)?;
    assert_eq!(said, b"done");
    link.revoke(&worker, WAIT)?;
    link.send(b"bye")?;
    Ok(())
}

/// The client: writes both tensors, reads them back, prints the bandwidth.
/// `mode`: how to connect (`None`: `Worker::connect` chooses).
fn client(
    context: &Context,
    port: u16,
    transport: &str,
    mode: Option<ErrorMode>,
) -> Result<(), Error> {
    let worker = context.worker()?;
    let mut link = Link::connect(("127.0.0.1", port), WAIT)?;
    let endpoint = match mode {
        Some(mode) => worker.connect_with(&mut link, WAIT, mode)?,
        None => worker.connect(&mut link, WAIT)?,
    };
    // Descriptors are unverified bytes until the server confirms them.
    let weights = Descriptor::from_bytes(&link.recv(WAIT)?)?;
    let weights = link.verify(&weights, WAIT)?;
    let history = Descriptor::from_bytes(&link.recv(WAIT)?)?;
    let history = link.verify(&history, WAIT)?;
    let weights = endpoint.remote(&weights)?;
    let history = endpoint.remote(&history)?;

    let mine: [std::vec::Vec<f32>; 2] = [
        (0..WEIGHTS).map(|i| value(0, i)).collect(),
        (0..HISTORY).map(|i| value(1, i)).collect(),
    ];
    let bytes = (WEIGHTS + HISTORY) * 4;
    let started = Instant::now();
    for (remote, tensor) in [(&weights, &mine[0]), (&history, &mine[1])] {
        write(remote, tensor)?;
    }
    endpoint.flush()?;
    let wrote = started.elapsed();
    link.send(b"written")?;
    let verdict = String::from_utf8_lossy(&link.recv(WAIT)?).into_owned();

    let mut back = [vec![0f32; WEIGHTS], vec![0f32; HISTORY]];
    let started = Instant::now();
    let [back_weights, back_history] = &mut back;
    read(&weights, back_weights)?;
    read(&history, back_history)?;
    let read_took = started.elapsed();
    endpoint.flush()?;
    link.send(b"done")?;
    // The server revokes the descriptors meanwhile: flushed, this side
    // lets go as soon as it reads that.
    assert_eq!(link.recv(WAIT)?, b"bye");
    let same = back == mine;

    let rate = |took: Duration| bytes as f64 / took.as_secs_f64() / (1u64 << 20) as f64;
    println!(
        "{transport}: wrote {} MiB into the server's Model in {wrote:.2?} ({:.0} MiB/s), \
         read it back in {read_took:.2?} ({:.0} MiB/s), {}; server: {verdict}",
        bytes >> 20,
        rate(wrote),
        rate(read_took),
        if same {
            "every value the same"
        } else {
            "VALUES DIFFER"
        },
    );
    if !same || !verdict.starts_with("checked") {
        return Err(Error::InvalidArgument {
            reason: "the tensor read back is not the one written",
        });
    }
    Ok(())
}

/// Puts `tensor` into `remote` in pieces, many in flight.
fn write(remote: &Remote<'_>, tensor: &[f32]) -> Result<(), Error> {
    remote.batch(|batch| {
        for (i, piece) in as_bytes(tensor).chunks(PIECE).enumerate() {
            batch.put(i * PIECE, piece)?;
        }
        Ok(())
    })
}

/// Gets `remote` into `tensor` in pieces, many in flight.
fn read(remote: &Remote<'_>, tensor: &mut [f32]) -> Result<(), Error> {
    remote.batch(|batch| {
        for (i, piece) in as_bytes_mut(tensor).chunks_mut(PIECE).enumerate() {
            batch.get(i * PIECE, piece)?;
        }
        Ok(())
    })
}
