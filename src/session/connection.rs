//! The connection task: `run` builds the `Session` from what `opening` prepared and drives its
//! `select!` loop over client frames, the outbox, the heartbeat and shutdown, then closes the
//! socket. It owns every socket write (buffered, direct for long frames, each under the write
//! deadline of `guard`) and maps socket errors to how the connection ends. It calls `dispatch`
//! for client frames and `catchup` for outbox items and pending catch-up pages.

use super::opening::announce_presence;
use super::*;

/// Runs a session until the connection ends. `_permit` is held for the session's lifetime.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    app: Arc<App>,
    opened: Box<Opened>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Opened {
        user,
        handle,
        registered,
        rx,
        slot: _slot,
        contacts,
        conversations,
    } = *opened;
    tracing::debug!(user = %user.name, session = handle.id, "session started");
    let limits = &app.config.limits;
    let mut s = Session {
        bucket: TokenBucket::full(limits.frame_burst, Instant::now()),
        app: app.clone(),
        user,
        handle,
        ws,
        rx,
        synced: false,
        cursors: HashMap::new(),
        pending: BTreeSet::new(),
        sync_ref: None,
        batch: false,
        limited_streak: 0,
        typing_last: HashMap::new(),
        last_seen: Instant::now(),
        slow_deadline: None,
        welcome_seqs: None,
        welcome: Some((conversations, contacts)),
    };
    let end = s.run().await;
    let (id, uid) = (s.handle.id, s.user.id);
    let slow = match &end {
        End::Stalled => true,
        End::Close(1008, reason) => *reason == SLOW_REASON,
        _ => false,
    };
    let overflowed = s.handle.flags.overflowed.load(Ordering::Acquire);
    let closed = Box::pin(s.finish(end)).await;
    if slow {
        app.metrics.slow_closes.fetch_add(1, Ordering::Relaxed);
        let l = &app.config.limits;
        let how = if closed {
            "closed with 1008".to_string()
        } else if overflowed {
            format!(
                "it took no data for {:?}: dropped without a close frame",
                l.slow_close_grace
            )
        } else {
            format!(
                "a write made no progress for {:?}: dropped without a close frame",
                l.write_timeout
            )
        };
        let why = if overflowed {
            format!("its outbox of {} frames filled", l.outbox_frames)
        } else {
            "it stopped reading".to_string()
        };
        tracing::info!(user = uid.0, session = id, "slow client: {why}; {how}");
    }
    app.last_seen.touch(uid);
    if registered.leave() {
        announce_presence(app.clone(), uid);
    }
    tracing::debug!(user = uid.0, session = id, "session ended");
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn run(&mut self) -> End {
        let limits = self.app.config.limits.clone();
        if let Err(end) = Box::pin(self.welcome()).await {
            return end;
        }
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut shutdown = self.app.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return End::Close(1001, "server shutting down");
        }
        let flags = self.handle.flags.clone();
        // Made once and re-armed only when they fire: creating and dropping them on every
        // outbox wake-up costs a lock each on the Notify waiter lists.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        let wake = flags.wake.notified();
        tokio::pin!(wake);
        // `wake` hears only what is signalled from now on (`notify_waiters`).
        if let Err(end) = self.check_flags(&flags) {
            return end;
        }
        // Fires at the idle deadline of the last frame seen when it was set; re-armed from the
        // newest one instead of being reset on every frame.
        let idle = tokio::time::sleep_until((self.last_seen + limits.idle_timeout).into());
        tokio::pin!(idle);
        loop {
            let step = tokio::select! {
                msg = self.ws.next() => match msg {
                    None => Err(End::Gone),
                    Some(Ok(m)) => Box::pin(self.on_ws(m)).await,
                    Some(Err(e)) => Err(ws_error(e)),
                },
                Some(out) = self.rx.recv() => Box::pin(self.on_outbound(out)).await,
                _ = &mut wake => {
                    wake.set(flags.wake.notified());
                    self.check_flags(&flags)
                }
                _ = ping.tick() => Box::pin(self.write(Message::Ping(Default::default()))).await,
                _ = &mut idle => {
                    let deadline = self.last_seen + limits.idle_timeout;
                    if Instant::now() >= deadline {
                        Err(End::Close(1000, "idle timeout"))
                    } else {
                        idle.as_mut().reset(deadline.into());
                        Ok(())
                    }
                }
                _ = &mut stop => Err(End::Close(1001, "server shutting down")),
                _ = std::future::ready(()), if !self.pending.is_empty() => Box::pin(self.catch_up_page()).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Ends the session if an administrator revoked it or its outbox overflowed.
    pub(super) fn check_flags(&mut self, flags: &SessionFlags) -> Step {
        if flags.revoked.load(Ordering::Acquire) {
            Err(End::Close(1008, "signed out by an administrator"))
        } else if flags.overflowed.load(Ordering::Acquire) {
            let grace = self.app.config.limits.slow_close_grace;
            self.slow_deadline
                .get_or_insert_with(|| Instant::now() + grace);
            Err(End::Close(1008, SLOW_REASON))
        } else {
            Ok(())
        }
    }

    /// Sends the close frame (if any) and waits briefly for the client's: at most
    /// `close_wait`, and for a slow client only until its `slow_deadline`. Returns whether the
    /// close frame was handed to the socket.
    pub(super) async fn finish(&mut self, end: End) -> bool {
        let End::Close(code, reason) = end else {
            return false;
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        let l = &self.app.config.limits;
        let mut deadline = Instant::now() + l.close_wait;
        if let Some(d) = self.slow_deadline {
            deadline = deadline.min(d);
        }
        let mut sent = false;
        let _ = tokio::time::timeout_at(deadline.into(), async {
            if self.ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            sent = true;
            while let Some(Ok(m)) = self.ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        sent
    }

    /// Runs a socket write or flush under its deadline (see `guard`).
    pub(super) async fn io(
        &mut self,
        f: impl AsyncFnOnce(&mut WebSocketStream<S>) -> Result<(), WsError>,
    ) -> Step {
        let l = &self.app.config.limits;
        let (timeout, grace) = (l.write_timeout, l.slow_close_grace);
        guard(
            &self.handle.flags,
            &mut self.slow_deadline,
            timeout,
            grace,
            f(&mut self.ws),
        )
        .await
    }

    pub(super) async fn write(&mut self, msg: Message) -> Step {
        self.io(async |ws| ws.send(msg).await).await
    }

    pub(super) async fn send_frame(&mut self, frame: &ServerFrame) -> Step {
        let text = encode(frame);
        if text.len() >= DIRECT_FRAME_BYTES {
            self.feed_text(text).await?;
            return self.flush().await;
        }
        self.write(Message::Text(text)).await
    }

    /// Queues a text frame (a short one in tungstenite's write buffer, a long one written out
    /// at once, see `DIRECT_FRAME_BYTES`); `flush` sends what is queued.
    pub(super) async fn feed_text(&mut self, text: Utf8Bytes) -> Step {
        if text.len() < DIRECT_FRAME_BYTES {
            self.io(async |ws| ws.feed(Message::Text(text)).await).await
        } else {
            self.io(async |ws| write_direct(ws, text).await).await
        }
    }

    pub(super) async fn flush(&mut self) -> Step {
        self.io(async |ws| ws.flush().await).await
    }

    pub(super) async fn send_error(
        &mut self,
        reference: Option<u64>,
        client_id: Option<String>,
        code: ErrorCode,
        message: &str,
    ) -> Step {
        self.send_frame(&ServerFrame::error(reference, client_id, code, message))
            .await
    }
}

/// Runs a socket write to completion unless the client stops taking data: it ends as
/// `Stalled` after `timeout` without completing, or by the session's `slow_deadline` once the
/// outbox has overflowed (the hub says so through `flags.wake`; the deadline is then set to
/// `grace` from that moment, for this and every later write). A write that is ready at once
/// costs no timer.
pub(super) async fn guard(
    flags: &SessionFlags,
    slow_deadline: &mut Option<Instant>,
    timeout: std::time::Duration,
    grace: std::time::Duration,
    write: impl std::future::Future<Output = Result<(), WsError>>,
) -> Step {
    // Created before the flag is read, so an overflow after the read still wakes it.
    let overflow = flags.wake.notified();
    tokio::pin!(overflow, write);
    let deadline = |slow: &Option<Instant>, start: Instant| {
        let d = start + timeout;
        slow.map_or(d, |s| d.min(s))
    };
    let start = Instant::now();
    if flags.overflowed.load(Ordering::Acquire) {
        slow_deadline.get_or_insert_with(|| start + grace);
    }
    let sleep = tokio::time::sleep_until(deadline(slow_deadline, start).into());
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            r = &mut write => return r.map_err(ws_error),
            _ = &mut sleep => return Err(End::Stalled),
            _ = &mut overflow => {
                overflow.set(flags.wake.notified());
                if flags.overflowed.load(Ordering::Acquire) && slow_deadline.is_none() {
                    *slow_deadline = Some(Instant::now() + grace);
                    sleep.as_mut().reset(deadline(slow_deadline, start).into());
                }
            }
        }
    }
}

/// Writes one text frame to the socket under the WebSocket, after everything tungstenite has
/// queued (so frames keep their order), with the header from tungstenite's own `FrameHeader`
/// and one vectored write for header and payload. A server's frames are unmasked and this one
/// is whole (FIN), so the bytes are exactly what tungstenite would have written. Only called
/// from the session's own task, between frames, while the connection is open (a received close
/// ends the session loop before anything else is written).
pub(super) async fn write_direct<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    text: Utf8Bytes,
) -> Result<(), WsError> {
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    ws.flush().await?;
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let payload = bytes::Bytes::from(text);
    let mut head = [0u8; 14];
    let head_len = header.len(payload.len() as u64);
    header.format(payload.len() as u64, &mut &mut head[..])?;
    let mut out = (&head[..head_len]).chain(payload);
    let stream = ws.get_mut();
    stream.write_all_buf(&mut out).await?;
    Ok(())
}

/// Maps a read/write error to how the connection ends.
pub(super) fn ws_error(e: WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Close(1009, "frame too large"),
        WsError::Utf8(_) => End::Close(1007, "invalid UTF-8"),
        WsError::Protocol(_) => End::Close(1002, "protocol error"),
        WsError::WriteBufferFull(m) => {
            // Frames wait for the previous one to be written, so only a frame bigger than
            // `ws_max_write_buffer` gets here: a server bug, not the client's doing.
            tracing::error!(
                bytes = m.len(),
                "a frame is larger than the write buffer limit; closing the connection"
            );
            End::Gone
        }
        _ => End::Gone,
    }
}
