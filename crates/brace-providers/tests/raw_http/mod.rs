//! Reading requests off a raw socket, for the loopback servers of the lean client's tests
//! (`lean.rs`, `lean_h1.rs`), which answer with bytes of their own.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads the next request on `socket` (a head, then a body of its `content-length`) and
/// returns its head (without the blank line), or `None` when the client has gone. `buffer`
/// keeps what was read past it.
pub(crate) async fn next_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            if buffer.len() >= end + 4 + length {
                buffer.drain(..end + 4 + length);
                return Some(head);
            }
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}
