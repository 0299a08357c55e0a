//! One agent under supervision: its actor, what it shares with heartbeat callers, and the
//! deadline wheel.
//!
//! A heartbeat takes the fast path: the caller stamps the agent's [`cell::AgentCell`] (no
//! message), and the [`wheel`] reads the stamp when the deadline comes. Only a change the
//! state machine must see (a beat after a missed deadline, a reported status that differs)
//! becomes a message to the [`actor`]. Every beat is seen once: by the cell if it is routine,
//! by the actor otherwise.
//!
//! - `actor`: the AgentActor, which runs the state machine and executes its effects.
//! - `cell`: the fast-path state shared with heartbeat callers.
//! - `wheel`: one task holding every agent's pending deadline.

mod actor;
pub(crate) mod cell;
pub(crate) mod handle;
pub(crate) mod wheel;

pub(crate) use actor::{AgentActor, AgentArgs, AgentMsg, AgentOp, Ctx, Mode};
