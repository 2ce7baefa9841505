//! AF_PACKET capture of one ethertype on a host's uplink (gratuitous ARPs, NDP), kept in
//! memory with arrival times. Apart from the servers because it is raw-socket code, read
//! a piece at a time by long benches.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::bed::Host;

/// A captured frame and when it arrived.
pub type Frame = (Instant, Vec<u8>);

/// Frames of one ethertype received on a host's interface, captured with AF_PACKET from
/// a thread inside the host's namespace.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<std::sync::Mutex<Vec<Frame>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    pub fn start(host: &Host, ethertype: u16) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let iface = host.iface.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = frames.clone();
        let thread = host.ns.spawn(move || {
            let proto = ethertype.to_be() as i32;
            // SAFETY: plain socket(2); checked below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let c = std::ffi::CString::new(iface).unwrap_or_default();
            // SAFETY: sockaddr_ll is plain data; fd is ours; c outlives the call.
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = ethertype.to_be();
                sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
                let rc = libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
            }
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    if let Ok(mut f) = sink.lock() {
                        f.push((Instant::now(), buf[..n as usize].to_vec()));
                    }
                }
            }
            // SAFETY: closing our own descriptor once.
            unsafe { libc::close(fd) };
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("capture did not start: {e}"));
        Capture {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// (arrival time, frame) for everything captured so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames_from(0)
    }

    /// The frames captured after the first `skip` (for readers that go through a long
    /// capture a piece at a time instead of copying all of it on every look).
    pub fn frames_from(&self, skip: usize) -> Vec<Frame> {
        self.frames
            .lock()
            .map(|f| f.get(skip..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
