//! A supervisor's mailbox: the [`Command`]s the registry and the API send to one guest's task,
//! delivered in order.
//!
//! Every guest has one, so it is built for being idle: a mutex over a queue that allocates only
//! once a command has waited in it, a count of senders and the task's waker, about 100 bytes
//! in one allocation. tokio's bounded channel, used before, allocates about 1 KiB per guest
//! up front (its cache-padded shared state and a first block of 32 slots), which was a sixth
//! of the agent's memory at 10,000 guests. Commands are rare (a reconnect, a stop, a lifecycle
//! operation, a recovery order), so the lock is short and never contended in practice.
//!
//! [`Mailbox::try_send`] refuses a command when [`CAPACITY`] commands already wait or the task
//! has ended, and hands it back; [`Mailbox::send_stop`] always delivers (a stop must not be
//! lost to a full queue). [`Inbox::recv`] answers `None` once every [`Mailbox`] is gone and
//! the queue is empty. Dropping the [`Inbox`] drops what still waits, so an order's answer
//! channel closes and its sender learns that nobody took it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::Command;

/// Commands that may wait in a mailbox; a further [`Mailbox::try_send`] is refused.
pub(crate) const CAPACITY: usize = 4;

#[derive(Debug)]
struct State {
    queue: VecDeque<Command>,
    senders: usize,
    open: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side; clone it for every holder.
#[derive(Debug)]
pub(crate) struct Mailbox(Arc<Shared>);

/// The receiving side, held by the supervisor.
#[derive(Debug)]
pub(crate) struct Inbox(Arc<Shared>);

/// A new, empty mailbox.
pub(crate) fn mailbox() -> (Mailbox, Inbox) {
    let shared = Arc::new(Shared(Mutex::new(State {
        queue: VecDeque::new(),
        senders: 1,
        open: true,
        waker: None,
    })));
    (Mailbox(Arc::clone(&shared)), Inbox(shared))
}

impl Mailbox {
    /// Queues `command` unless the mailbox is full or its task has ended; hands it back then.
    pub(crate) fn try_send(&self, command: Command) -> Result<(), Command> {
        self.push(command, CAPACITY)
    }

    /// Queues [`Command::Stop`] whatever else waits; false when the task has ended.
    pub(crate) fn send_stop(&self) -> bool {
        self.push(Command::Stop, usize::MAX).is_ok()
    }

    fn push(&self, command: Command, capacity: usize) -> Result<(), Command> {
        let waker = {
            let mut state = self.0.lock();
            if !state.open || state.queue.len() >= capacity {
                return Err(command);
            }
            state.queue.push_back(command);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Clone for Mailbox {
    fn clone(&self) -> Mailbox {
        self.0.lock().senders += 1;
        Mailbox(Arc::clone(&self.0))
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Inbox {
    /// The next command; `None` once every [`Mailbox`] is dropped and nothing waits.
    /// Cancel-safe: a command is taken only when this resolves.
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<Command>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        let mut state = self.0.lock();
        if let Some(command) = state.queue.pop_front() {
            return Poll::Ready(Some(command));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next command if one waits.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Command> {
        self.0.lock().queue.pop_front()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.0.lock();
            state.open = false;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Cause;
    use crate::supervisor::Order;
    use tether_hypervisor::Action;
    use tokio::sync::oneshot;

    fn is_stop(command: Option<Command>) -> bool {
        matches!(command, Some(Command::Stop))
    }

    #[test]
    fn commands_arrive_in_order_and_a_full_mailbox_refuses_all_but_a_stop() {
        let (tx, mut rx) = mailbox();
        assert!(tx.try_send(Command::Reconnect).is_ok());
        for _ in 1..CAPACITY {
            assert!(tx.try_send(Command::Stop).is_ok());
        }
        assert!(matches!(
            tx.try_send(Command::Reconnect),
            Err(Command::Reconnect)
        ));
        assert!(tx.send_stop());
        assert!(matches!(rx.try_recv(), Some(Command::Reconnect)));
        for _ in 0..CAPACITY {
            assert!(is_stop(rx.try_recv()));
        }
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn recv_waits_for_a_command_from_another_task_and_ends_with_the_last_sender() {
        let (tx, mut rx) = mailbox();
        let other = tx.clone();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert!(other.try_send(Command::Reconnect).is_ok());
            drop(other);
        });
        assert!(matches!(rx.recv().await, Some(Command::Reconnect)));
        sender.await.unwrap();
        assert!(tx.send_stop());
        drop(tx);
        assert!(is_stop(rx.recv().await), "what waits is delivered first");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_inbox_refuses_commands_and_closes_waiting_orders() {
        let (tx, rx) = mailbox();
        let (answer, outcome) = oneshot::channel();
        let order = Order {
            action: Action::Reboot,
            cause: Cause::Lost,
            give_up: None,
            answer,
        };
        assert!(tx.try_send(Command::Recover(Box::new(order))).is_ok());
        drop(rx);
        assert!(outcome.await.is_err(), "the order was dropped unanswered");
        assert!(tx.try_send(Command::Reconnect).is_err());
        assert!(!tx.send_stop());
    }
}
