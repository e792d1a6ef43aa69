//! `vswitchctl top`'s sampling: `GET /v1/stats` every interval, either once (`--once`: two
//! samples, one printout) or for a live view on the terminal until `q`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use switch::model::StatsInfo;

use super::{drops_line, summary, Args, Frame, Key, Rates, View};
use crate::client::{Client, ClientError};
use crate::routes;
use switch::sys::term::{self, Event, Screen};

/// A sample of the counters and when it arrived.
fn sample(c: &Client) -> Result<(StatsInfo, Instant), ClientError> {
    let s: StatsInfo = c.call("GET", routes::STATS, None::<&()>)?;
    Ok((s, Instant::now()))
}

/// Run `top` with `args`; `json` is vswitchctl's `--json` (only with `--once`).
pub fn run(c: &Client, json: bool, args: &Args) -> Result<(), ClientError> {
    if args.once {
        return once(c, json, args);
    }
    if json {
        return Err(ClientError::Api(
            "top: --json needs --once (the live view is for a terminal)".into(),
        ));
    }
    if !std::io::stdout().is_terminal() {
        return Err(ClientError::Api(
            "top: standard output is not a terminal: use --once to print the rates once (with \
             --json for scripts)"
                .into(),
        ));
    }
    live(c, args)
}

/// `--once`: two samples one interval apart, printed as JSON or as the header and the table.
fn once(c: &Client, json: bool, args: &Args) -> Result<(), ClientError> {
    let (first, t0) = sample(c)?;
    std::thread::sleep(args.interval);
    let (second, t1) = sample(c)?;
    let mut r = Rates::between(&first, &second, t1 - t0);
    let view = View::new(args.sort, args.reverse);
    if json {
        r.ports = view.sorted(&r.ports).into_iter().cloned().collect();
        let s =
            serde_json::to_string_pretty(&r).map_err(|e| ClientError::Protocol(e.to_string()))?;
        println!("{s}");
        return Ok(());
    }
    println!(
        "over {:.2}s, {} port(s): {}",
        r.interval_secs,
        r.ports.len(),
        summary(&r)
    );
    println!("{}", drops_line(&r));
    println!();
    print!("{}", view.table(&r, false));
    Ok(())
}

/// The live view: a frame per sample, and at once after a key or a resize.
fn live(c: &Client, args: &Args) -> Result<(), ClientError> {
    // Before the terminal changes: a daemon that does not answer is the usual one-line error.
    let (mut prev, mut prev_at) = sample(c)?;
    let mut rates = Rates::between(&prev, &prev, Duration::ZERO);
    let mut clock = term::clock();
    let mut error: Option<String> = None;
    let mut view = View::new(args.sort, args.reverse);
    let mut screen = Screen::enter()?;
    let mut next = prev_at + args.interval;
    loop {
        let (cols, rows) = screen.size();
        let frame = Frame {
            rates: &rates,
            view,
            clock: &clock,
            interval: args.interval,
            error: error.as_deref(),
        };
        screen.draw(&frame.lines(cols, rows))?;
        // Wait for the next sample, redrawing early for a key or a resize.
        let now = Instant::now();
        if now < next {
            match screen.wait(next - now)? {
                Event::Quit => return Ok(()),
                Event::Resized => continue,
                Event::Keys(read) => {
                    if view.keys(&read) == Key::Quit {
                        return Ok(());
                    }
                    continue;
                }
                Event::Timeout => {}
            }
        }
        match sample(c) {
            Ok((s, at)) => {
                rates = Rates::between(&prev, &s, at - prev_at);
                (prev, prev_at) = (s, at);
                error = None;
            }
            // Shown in the header; the next interval tries again.
            Err(e) => error = e.to_string().lines().next().map(str::to_string),
        }
        clock = term::clock();
        next += args.interval;
        // After a slow answer, the next sample is an interval from now, not at once.
        if next < Instant::now() {
            next = Instant::now() + args.interval;
        }
    }
}
