//! The terminal of `vswitchctl top`'s live view (here with the rest of the `unsafe` code):
//! raw mode (termios), the window size, waiting for a key, signals that end the view, and the
//! local clock. [`Screen`] puts the terminal back as it found it when dropped: on `q`, Ctrl-C,
//! SIGINT/SIGTERM/SIGHUP, an error, or a panic. Every `unsafe` block carries a `// SAFETY:`
//! note.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by SIGINT, SIGTERM or SIGHUP while a [`Screen`] is up.
static QUIT: AtomicBool = AtomicBool::new(false);
/// Set by SIGWINCH: the window changed size.
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_quit(_: libc::c_int) {
    QUIT.store(true, Ordering::Relaxed);
}

extern "C" fn on_resize(_: libc::c_int) {
    RESIZED.store(true, Ordering::Relaxed);
}

/// The signals a [`Screen`] handles, with the handler of each.
const SIGNALS: [(libc::c_int, extern "C" fn(libc::c_int)); 4] = [
    (libc::SIGINT, on_quit),
    (libc::SIGTERM, on_quit),
    (libc::SIGHUP, on_quit),
    (libc::SIGWINCH, on_resize),
];

/// Enter the alternate screen, hide the cursor, go home, clear.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
/// Show the cursor, leave the alternate screen (what was on the terminal comes back).
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// What ended a [`Screen::wait`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The time passed.
    Timeout,
    /// Keys pressed (bytes as the terminal sent them).
    Keys(Vec<u8>),
    /// The window changed size.
    Resized,
    /// SIGINT, SIGTERM or SIGHUP: leave.
    Quit,
}

/// The terminal while the live view owns it.
pub struct Screen {
    /// Standard input's settings before raw mode (`None`: input is not a terminal, no keys).
    saved: Option<libc::termios>,
    /// The signal actions replaced, put back on drop.
    old_actions: Vec<(libc::c_int, libc::sigaction)>,
    /// Standard input reached end of file: stop waiting on it.
    input_closed: bool,
}

impl Screen {
    /// Take the terminal: handle the signals, put standard input (when it is a terminal) in raw
    /// mode (keys arrive one by one, unechoed; Ctrl-C arrives as a key), switch to the
    /// alternate screen and hide the cursor.
    pub fn enter() -> io::Result<Screen> {
        QUIT.store(false, Ordering::Relaxed);
        RESIZED.store(false, Ordering::Relaxed);
        let mut s = Screen {
            saved: None,
            old_actions: Vec::new(),
            input_closed: false,
        };
        for (sig, handler) in SIGNALS {
            // SAFETY: an all-zero sigaction is a valid value (no handler, empty mask, no flags)
            // that is filled in below.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = handler as libc::sighandler_t;
            // No SA_RESTART: a signal interrupts the wait in poll(2) at once.
            act.sa_flags = 0;
            // SAFETY: `act.sa_mask` is a valid sigset_t owned by this frame.
            unsafe { libc::sigemptyset(&mut act.sa_mask) };
            // SAFETY: as above for `old`.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to valid sigactions; the handler only stores to an
            // atomic, which is async-signal-safe.
            if unsafe { libc::sigaction(sig, &act, &mut old) } != 0 {
                return Err(io::Error::last_os_error());
            }
            s.old_actions.push((sig, old));
        }
        let stdin = io::stdin();
        if stdin.is_terminal() {
            let fd = stdin.as_raw_fd();
            // SAFETY: as above; tcgetattr fills it in.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is standard input, open for the process's life; `t` is valid.
            if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let saved = t;
            // Not cfmakeraw: output processing stays on (so "\n" still returns the carriage).
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            t.c_iflag &= !(libc::IXON | libc::ICRNL);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            // SAFETY: as for tcgetattr.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            s.saved = Some(saved);
        }
        s.write(ENTER)?;
        Ok(s)
    }

    /// The window's size as (columns, rows); 80x24 when the terminal does not say.
    pub fn size(&self) -> (usize, usize) {
        // SAFETY: an all-zero winsize is valid; ioctl fills it in.
        let mut w: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which is valid.
        let r = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut w) };
        if r != 0 || w.ws_col == 0 || w.ws_row == 0 {
            return (80, 24);
        }
        (usize::from(w.ws_col), usize::from(w.ws_row))
    }

    /// Draw `lines` over the previous frame: home, each line then clear to its end, then clear
    /// below, in one write (no flicker).
    pub fn draw(&mut self, lines: &[String]) -> io::Result<()> {
        let mut f = String::from("\x1b[H");
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                f.push_str("\r\n");
            }
            f.push_str(l);
            f.push_str("\x1b[K");
        }
        f.push_str("\x1b[J");
        self.write(&f)
    }

    fn write(&mut self, s: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(s.as_bytes())?;
        out.flush()
    }

    /// Wait at most `timeout` for a key (when standard input is a terminal) or a signal.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Event> {
        if QUIT.load(Ordering::Relaxed) {
            return Ok(Event::Quit);
        }
        if RESIZED.swap(false, Ordering::Relaxed) {
            return Ok(Event::Resized);
        }
        let keys = self.saved.is_some() && !self.input_closed;
        let mut pfd = libc::pollfd {
            fd: io::stdin().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up, so a wait never ends just short of its deadline and spins.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd, and nfds says 0 or 1 of them.
        let n = unsafe { libc::poll(&mut pfd, libc::nfds_t::from(keys), ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            if QUIT.load(Ordering::Relaxed) {
                return Ok(Event::Quit);
            }
            RESIZED.store(false, Ordering::Relaxed);
            return Ok(Event::Resized);
        }
        if n == 0 {
            return Ok(Event::Timeout);
        }
        // Straight from the descriptor: std's buffered stdin could keep keys poll(2) no longer
        // sees.
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for writes of its length.
        let got = unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(got) {
            Ok(0) => self.input_closed = true,
            Ok(n) => return Ok(Event::Keys(buf[..n].to_vec())),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    // The terminal went away (EIO): no more keys; SIGHUP ends the view.
                    self.input_closed = true;
                }
            }
        }
        Ok(Event::Keys(Vec::new()))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.write(LEAVE);
        if let Some(t) = &self.saved {
            // SAFETY: `t` is the termios tcgetattr gave for this same descriptor.
            unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSADRAIN, t) };
        }
        for (sig, old) in self.old_actions.drain(..) {
            // SAFETY: `old` is the action sigaction(2) returned for this signal.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
    }
}

/// The local time of day, `HH:MM:SS`.
pub fn clock() -> String {
    // SAFETY: time(2) with a null pointer only returns the time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero tm is valid; localtime_r fills it in.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return "--:--:--".into();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}
