//! `berth shell`: an interactive terminal in a sandbox over the terminal WebSocket. The
//! local terminal goes into raw mode (and is restored however this ends), window size
//! changes are forwarded, and the command exits with the remote shell's exit code.

use super::RemoteOpts;
use berth_runtime::term::TermControl;
use futures_util::{SinkExt, StreamExt};
use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The local terminal's settings, put back when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The local window's size, when stdout is a terminal.
fn window_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ into a winsize we own.
    let ok = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (ok == 0 && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

fn resize_message((cols, rows): (u16, u16)) -> Message {
    let text = serde_json::to_string(&TermControl::Resize { cols, rows }).unwrap_or_default();
    Message::Text(text.into())
}

pub async fn shell(
    remote: RemoteOpts,
    id: &str,
    session: Option<String>,
    cmd: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = super::remote::client(&remote)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some((cols, rows)) = window_size() {
        query.push(("cols", cols.to_string()));
        query.push(("rows", rows.to_string()));
    }
    if let Some(session) = &session {
        query.push(("session", session.clone()));
    }
    if let Some(cmd) = &cmd {
        query.push(("cmd", cmd.clone()));
    }
    let url = format!(
        "{}/v1/sandboxes/{id}/terminal?{}",
        client.base().replacen("http", "ws", 1),
        serde_urlencoded::to_string(&query)?
    );
    let mut request = url.into_client_request()?;
    if let Some(key) = client.key() {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
            let message = body
                .as_ref()
                .and_then(|b| b["error"]["message"].as_str())
                .unwrap_or("the server refused the terminal");
            anyhow::bail!("{message} ({status})");
        }
        Err(e) => anyhow::bail!(
            "cannot reach {} ({e}); is `berth serve` running?",
            client.base()
        ),
    };
    let (mut sink, mut stream) = ws.split();
    let raw = RawMode::enter();
    let interactive = raw.is_some();
    let signal = |kind| tokio::signal::unix::signal(kind);
    use tokio::signal::unix::SignalKind;
    let (mut winch, mut term, mut hup) = (
        signal(SignalKind::window_change())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut exit_code: Option<i32> = None;
    let mut note: Option<String> = None;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(&bytes).and_then(|_| out.flush()).is_err() {
                        // Nobody reads our output any more (`berth shell | head`).
                        break;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<TermControl>(&text) {
                    Ok(TermControl::Exit { exit_code: code }) => exit_code = code,
                    Ok(TermControl::Error { message }) => note = Some(message),
                    Ok(TermControl::Dropped { bytes }) => {
                        note = Some(format!("{bytes} bytes of earlier output were no longer kept"));
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    if exit_code.is_none() {
                        note = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    note = Some(format!("the connection broke: {e}"));
                    break;
                }
                None => break,
            },
            read = stdin.read(&mut buf), if stdin_open => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // Piped input ended: tell the program, as a terminal's Ctrl-D would.
                    if !interactive && sink.send(Message::Binary(vec![4u8].into())).await.is_err() {
                        break;
                    }
                }
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
            _ = winch.recv() => {
                if let Some(size) = window_size() {
                    let _ = sink.send(resize_message(size)).await;
                }
            }
            _ = term.recv() => {
                exit_code = Some(143);
                break;
            }
            _ = hup.recv() => {
                exit_code = Some(129);
                break;
            }
        }
    }
    drop(raw);
    if let Some(note) = note {
        eprintln!("\r\nberth: {note}");
    }
    let _ = std::io::stdout().flush();
    // Exit now: Tokio's stdin reader is blocked in read(2) on a thread of its own, and the
    // runtime would wait for it (for a key press) before the process could end.
    std::process::exit(exit_code.map_or(1, |code| code.clamp(0, 255)));
}
